"""The output's commit protocol: one writer at a time, staging no reader sees, and input change detection.

Every engine (local threads, Ray) goes through these three pieces, written against ``pyarrow.fs``: the same code
runs on a local disk and on an object store, where the two primitives a store lacks are replaced (see
:mod:`docscore.storage`): the lock's exclusive create is a conditional PUT (``If-None-Match: *``), and a rename
into place is an upload of the finished local file to its final key.

Layout under ``OUT`` (everything docscore keeps besides the outputs starts with ``_``, so Spark, Hive and
``pyarrow.dataset`` skip it; no staged name ends in ``.parquet``, so the ``OUT/**/*.parquet`` globs of polars and
DuckDB, which do descend into ``_`` folders, never count it)::

    OUT/_docscore/lock.json                             the writer lock: host, pid, start time, heartbeat, token
    OUT/_docscore/staging/<rel>.parts/part-NNNNN.staged  committed parts of a shard still in progress
    OUT/_docscore/staging/<rel>.parts/*.inprogress       files being written (a killed run's are removed); on an
                                                        object store these live in a local temporary folder

- :class:`WriterLock`: created atomically (``O_CREAT | O_EXCL``, or a conditional PUT); a lock whose process is dead (same host) or
  whose heartbeat is older than ``stale_after_s`` (another host) is taken over, under a second exclusive "break"
  file so two runs cannot both take it over. It fences: every commit step first proves the run still holds it
  (:meth:`WriterLock.check`), and a run that lost it stops with :class:`~docscore.errors.LockLostError`.
- :class:`Staging`: where parts and in-progress files go, publishing into ``OUT/<rel>``, and cleaning what
  earlier killed runs (and docscore versions before this layout) left.
- :func:`stat_fingerprint`, :class:`DigestingFile`, :func:`detect_change`: size + mtime + footer hash (+ the ETag
  on S3) on every night, and the sha256 of the whole file, computed while the scorer reads it and checked only when the cheap
  fingerprint moved, so a same-size rewrite is caught without hashing the archive every night.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

import pyarrow.fs as pafs

from docscore import storage
from docscore.errors import LockHeldError, LockLostError

log = logging.getLogger(__name__)

META_DIR = "_docscore"
LOCK_NAME = "lock.json"
STAGING_DIR = "staging"
PARTS_SUFFIX = ".parts"  # a folder, so never "*.parquet": a glob would take a folder named x.parquet for a file
STAGED = ".staged"
INPROGRESS = ".inprogress"
WORK_PREFIX = "docscore-staging-"  # object stores: <tmp>/docscore-staging-<pid>-*/, files being written
LEGACY_PARTS_DIR = "_parts"  # docscore before this layout: OUT/_parts/<rel>/part-NNNNN.parquet
_TAIL_BYTES = 1 << 16  # the Parquet footer (schema, row groups, statistics) lives at the end of the file
_CHUNK = 1 << 22


def local_fs() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


def _join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _delete_dir(fs: pafs.FileSystem, path: str) -> None:
    """Remove a folder and its contents. On GCS pyarrow deletes the contents, then fails (404) on a folder that had
    no marker object of its own (one that exists only as the prefix of its files): it is gone all the same."""
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        if _exists(fs, path):
            raise


# --- the writer lock ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockInfo:
    """Who holds an output: written into the lock file as JSON."""

    host: str
    pid: int
    started: str  # ISO 8601, UTC
    heartbeat: float  # time.time() of the last heartbeat
    run_id: str
    proc_start: str | None = None  # the holder's start time in /proc (same host): tells a reused pid apart

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class WriterLock:
    """One writer per output directory, and the fence that stops a writer which lost it.

    The lock file carries a token, the run's ``run_id``. Before every commit step a run proves it still holds the
    lock (:meth:`check`: read the lock, compare the token); the heartbeat thread also flags the loss as soon as it
    sees another token. The heartbeat never rewrites a lock that is no longer this run's: it re-reads it first and
    writes conditionally (S3 and Azure ``If-Match`` on the ETag it read, GCS ``ifGenerationMatch``; on a local disk
    it writes through the file it created itself, so a replacement file is never touched).

    Stale-takeover rule: a lock from the same host is stale when its pid is dead (or reused: ``/proc`` start time);
    from another host when its ``heartbeat`` (``time.time()`` written by the holder) is more than ``stale_after_s``
    behind the reader's clock. So clock skew between hosts eats into ``stale_after_s``; a run wrongly taken over is
    fenced (:class:`~docscore.errors.LockLostError`), never left writing beside the new holder.

    Args:
        out: the output directory.
        fs: its file system (local by default).
        stale_after_s: a lock from another host whose heartbeat is older than this is stale.
        heartbeat_s: how often the holder refreshes its heartbeat.
        name: the output as messages show it (its URI on an object store).
    """

    def __init__(self, out: str | os.PathLike, fs: pafs.FileSystem | None = None, stale_after_s: float = 600.0,
                 heartbeat_s: float = 30.0, name: str | None = None):
        self.fs = fs or local_fs()
        self.out = str(out)
        self.name = name or self.out  # the output as messages show it (a URI on an object store)
        self.path = _join(self.out, META_DIR, LOCK_NAME)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.info: LockInfo | None = None
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._fd: int | None = None  # local disk: the lock file this run created, kept open for the heartbeat
        self._lost: str | None = None  # who took the lock over, once this run knows it lost it
        self._lost_to: LockInfo | None = None  # the new holder, once its lock was read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the primitives: an exclusive create, a read of the bytes with their version, conditional replace and delete

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        return storage.create_exclusive(self.fs, path, data)

    def _create_lock(self, data: bytes) -> bool:
        if not self.local:
            return self._create_exclusive(self.path, data)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _read(self, path: str) -> bytes | None:
        try:
            return storage.read_bytes(self.fs, path)
        except FileNotFoundError:
            return None

    def _read_versioned(self) -> tuple[bytes, str | None] | None:
        try:
            return storage.read_versioned(self.fs, self.path)
        except FileNotFoundError:
            return None

    def _mtime(self, path: str) -> float | None:
        info = self.fs.get_file_info(path)
        return info.mtime.timestamp() if info.mtime is not None else None

    def _is_own_file(self) -> bool:
        """Local disk: the lock file at the path is the one this run created (not a taker's replacement)."""
        try:
            st, own = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    # the protocol

    @staticmethod
    def _parse(raw: bytes | None) -> LockInfo | None:
        if raw is None:
            return None
        try:
            return LockInfo(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def holder(self) -> LockInfo | None:
        """The current holder, or None when the output is not locked (or the lock is unreadable)."""
        return self._parse(self._read(self.path))

    def is_stale(self, info: LockInfo | None) -> bool:
        if info is None:  # torn (killed between create and write) or foreign: stale once it is old
            mtime = self._mtime(self.path)
            return mtime is None or time.time() - mtime > 60
        if info.host == socket.gethostname():
            if not _pid_alive(info.pid):
                return True
            return info.proc_start is not None and _proc_start(info.pid) not in (None, info.proc_start)
        return time.time() - info.heartbeat > self.stale_after_s

    def acquire(self) -> "WriterLock":
        """Take the lock or raise :class:`LockHeldError` naming the holder; a stale lock is taken over."""
        self.fs.create_dir(_join(self.out, META_DIR), recursive=True)
        pid = os.getpid()
        info = LockInfo(host=socket.gethostname(), pid=pid,
                        started=datetime.now(timezone.utc).isoformat(timespec="seconds"), heartbeat=time.time(),
                        run_id=uuid.uuid4().hex, proc_start=_proc_start(pid))
        for _ in range(3):
            if self._create_lock(self._encode(info)):
                self.info, self._lost, self._lost_to = info, None, None
                self._start_heartbeat()
                return self
            held = self.holder()
            if not self.is_stale(held):
                who = held.describe() if held else "a run that is starting"
                raise LockHeldError(
                    f"another docscore run is writing {self.name} ({who}). Wait for it to finish; if it was "
                    f"killed on another host, its lock {self.name}/{META_DIR}/{LOCK_NAME} is taken over once its heartbeat is "
                    f"{self.stale_after_s:g} s old, or delete that file")
            self._break(held)
        raise LockHeldError(f"could not take the lock {self.name}/{META_DIR}/{LOCK_NAME}: other runs keep taking it")

    def _break(self, stale: LockInfo | None) -> None:
        """Remove a stale lock, unless another run replaced it meanwhile (checked under an exclusive file, and on an
        object store by a delete conditional on the version that was judged stale)."""
        brk = self.path + ".break"
        if not self._create_exclusive(brk, b""):
            mtime = self._mtime(brk)
            if mtime is not None and time.time() - mtime > 60:  # a breaker killed mid-way
                self.fs.delete_file(brk)
            return
        try:
            got = self._read_versioned()
            if got is not None and self._parse(got[0]) == stale:
                log.warning("taking over the stale lock of %s", stale.describe() if stale else "an unknown run")
                if self.local:
                    self.fs.delete_file(self.path)
                else:
                    storage.delete_if_match(self.fs, self.path, got[1])
        finally:
            self.fs.delete_file(brk)

    @staticmethod
    def _encode(info: LockInfo) -> bytes:
        """The lock file's JSON; the heartbeat last and of a fixed width, so every heartbeat has the same length (a
        local heartbeat rewrites the file in place: a reader never sees a shorter or a shifted token)."""
        fields = asdict(info)
        beat = fields.pop("heartbeat")
        return (json.dumps(fields)[:-1] + f', "heartbeat": {beat:.6f}}}').encode()

    # the fence

    @property
    def lost(self) -> bool:
        """Whether this run knows it lost the lock to another run."""
        return self._lost is not None

    def check(self, read: bool = True) -> None:
        """Prove this run still holds the lock before a commit step: read the lock and compare its token (with
        ``read=False``, only whether the heartbeat already saw another holder).

        Raises:
            LockLostError: another run took the lock over (named in the message); nothing may be published.
        """
        if (self._lost is None or self._lost_to is None) and read and self.info is not None:
            got = self._read_versioned()
            held = self._parse(got[0]) if got else None
            if held is None or held.run_id != self.info.run_id:
                self._lose(held, got is not None)
        if self._lost is not None:
            raise LockLostError(
                f"lost the lock on {self.name} to {self._lost}, which took it over as stale (this run was paused, "
                "or its host's clock is behind, past the stale limit): this run stopped and published nothing more; "
                "the new holder finishes the output")

    def _lose(self, held: LockInfo | None, exists: bool) -> None:
        first = self._lost is None
        if self._lost_to is None and held is not None and held.run_id != self.info.run_id:
            self._lost_to = held  # named once read (a heartbeat may fall in a takeover's gap: no lock file yet)
            self._lost = held.describe()
        elif first:
            self._lost = ("a run that is starting" if exists
                          else "another run (the lock file is gone: taken over and released, or deleted)")
        if first:
            log.info("the lock %s was taken over by %s: this run stops at its next commit step", self.path,
                     self._lost)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="docscore-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._refresh():
                    return
            except Exception as e:  # noqa: BLE001 - a full disk or a store's hiccup must not end the heartbeat
                log.warning("cannot refresh the lock %s: %s", self.path, e)

    def _refresh(self) -> bool:
        """One heartbeat: re-read the lock, and rewrite it only if it is still this run's (conditionally); False
        once it is lost."""
        got = self._read_versioned()
        held = self._parse(got[0]) if got else None
        if held is None or held.run_id != self.info.run_id:
            self._lose(held, got is not None)
            return False
        info = LockInfo(**{**asdict(self.info), "heartbeat": time.time()})
        data = self._encode(info)
        if self.local:  # through the file this run created: a taker's replacement is a different file
            if not self._is_own_file():
                self._lose(self.holder(), True)
                return False
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        elif not storage.replace_if_match(self.fs, self.path, data, got[1]):
            got = self._read_versioned()
            self._lose(self._parse(got[0]) if got else None, got is not None)
            return False
        self.info = info
        return True

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still this run's (a lost lock is the new holder's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            if self.info is not None and self._lost is None:
                if self.local:
                    if self._fd is not None and self._is_own_file():
                        self.fs.delete_file(self.path)
                else:
                    got = self._read_versioned()
                    held = self._parse(got[0]) if got else None
                    if held is not None and held.run_id == self.info.run_id:
                        storage.delete_if_match(self.fs, self.path, got[1])
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.info = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- staging ------------------------------------------------------------------------------------------------


class Staging:
    """Where a shard's parts and in-progress files live until they are published into ``OUT/<rel>``.

    On a local disk, files are written under in-progress names and renamed into place. An object store has no
    rename: files are written to a local temporary directory (:attr:`work_fs`) and uploaded, whole, to their final
    key (a committed part's, or the output's), which becomes visible only once the upload completes.
    """

    def __init__(self, out: str | os.PathLike, fs: pafs.FileSystem | None = None,
                 fence: Callable[[], None] | None = None):
        self.fs = fs or local_fs()
        self.out = str(out)
        self.root = _join(self.out, META_DIR, STAGING_DIR)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.work_fs = self.fs if self.local else local_fs()  # where in-progress files are written
        self.fence = fence or _unfenced  # proves the run still holds the lock (WriterLock.check) before a change
        self._work_dir: str | None = None
        self._tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # in-progress names of this run's own

    def shard_dir(self, rel: str) -> str:
        return _join(self.root, rel + PARTS_SUFFIX)

    def part(self, rel: str, index: int) -> str:
        """A committed part (renamed or uploaded into place only when whole)."""
        return _join(self.shard_dir(rel), f"part-{index:05d}{STAGED}")

    def inprogress(self, rel: str, name: str) -> str:
        """A file being written (on :attr:`work_fs`): ``name`` is ``part-NNNNN`` or ``output``."""
        if not self.local:
            if self._work_dir is None:
                self._work_dir = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-")
            path = os.path.join(self._work_dir, rel + PARTS_SUFFIX, name + INPROGRESS)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return path
        # a name of this run's own: a run that lost the lock and did not know it yet never opens (truncates) the
        # file the new holder is writing
        path = _join(self.shard_dir(rel), f"{name}.{self._tag}{INPROGRESS}")
        self.fs.create_dir(self.shard_dir(rel), recursive=True)
        return path

    def committed_parts(self, rel: str, n_parts: int) -> int:
        """How many leading parts are committed (a part exists only once it was renamed into place)."""
        done = 0
        while done < n_parts and _exists(self.fs, self.part(rel, done)):
            done += 1
        return done

    def _place(self, tmp: str, final: str) -> None:
        self.fence()
        if self.local:
            self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
            self.fs.move(tmp, final)
        else:
            storage.upload(tmp, self.fs, final)

    def commit_part(self, tmp: str, rel: str, index: int) -> None:
        self._place(tmp, self.part(rel, index))

    def staged_file(self, rel: str, name: str) -> str:
        """Another committed file of a shard in progress (e.g. a part of its score file)."""
        return _join(self.shard_dir(rel), name)

    def commit_file(self, tmp: str, rel: str, name: str) -> None:
        self._place(tmp, self.staged_file(rel, name))

    def publish(self, tmp: str, rel: str) -> None:
        """Move a whole file (an output, a score file) into ``OUT/<rel>`` (a rename on a local disk, an upload to the final key on an
        object store: atomic either way)."""
        self._place(tmp, _join(self.out, rel))

    def discard(self, rel: str) -> None:
        self.fence()
        if _exists(self.fs, self.shard_dir(rel)):
            _delete_dir(self.fs, self.shard_dir(rel))

    def clean(self, keep: set[str]) -> list[str]:
        """Remove what killed runs left: in-progress files, the staging of shards not in ``keep`` (the unfinished
        shards whose committed parts a resume reuses), and the pre-``_docscore`` layout's ``_parts`` folder and
        ``*.parquet.tmp`` files beside the outputs. Returns the paths removed."""
        self.fence()
        removed = []
        if _exists(self.fs, self.root):
            for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
                if info.type == pafs.FileType.File and info.path.endswith(INPROGRESS):
                    self.fs.delete_file(info.path)
                    removed.append(info.path)
            for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
                if info.type == pafs.FileType.Directory and info.path.endswith(PARTS_SUFFIX):
                    rel = info.path[len(self.root) + 1:-len(PARTS_SUFFIX)]
                    if rel not in keep and _exists(self.fs, info.path):
                        _delete_dir(self.fs, info.path)
                        removed.append(info.path)
        legacy = _join(self.out, LEGACY_PARTS_DIR)
        if _exists(self.fs, legacy):
            _delete_dir(self.fs, legacy)
            removed.append(legacy)
        for info in self.fs.get_file_info(pafs.FileSelector(self.out, recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File and info.path.endswith(".parquet.tmp"):
                self.fs.delete_file(info.path)
                removed.append(info.path)
        if not self.local:
            removed += _clean_work_dirs()
        if removed:
            log.info("removed %d file(s) left by an earlier, interrupted run", len(removed))
        return removed

    def remove_all(self) -> None:
        self.fence()
        if _exists(self.fs, self.root):
            _delete_dir(self.fs, self.root)

    def close(self) -> None:
        """Remove this process's local folder of files being written (object stores), however the run ended: a
        killed run's is removed by the next run on the host (:func:`_clean_work_dirs`), a finished one's here."""
        if self._work_dir is not None:
            import shutil

            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None


def _unfenced() -> None:
    """No lock to prove (a Staging used on its own, e.g. by tests)."""


def _clean_work_dirs() -> list[str]:
    """Local temporary folders of object-store runs whose process is dead (killed mid-shard)."""
    import shutil

    removed = []
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(WORK_PREFIX):
            continue
        pid = name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(os.path.join(root, name))
    return removed


# --- change detection -----------------------------------------------------------------------------------------


def stat_fingerprint(path: str | os.PathLike, fs: pafs.FileSystem | None = None) -> dict:
    """Size, modification time, a hash of the last 64 KiB (the footer) and, on S3, the ETag: cheap enough for
    every night."""
    fs, path = fs or local_fs(), str(path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(errno.ENOENT, "no such file", path)
    with fs.open_input_file(path) as f:
        size = f.size()
        tail = f.read_at(min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    fp = {"size": size, "mtime_ns": info.mtime_ns, "tail_sha256": hashlib.sha256(tail).hexdigest()}
    tag = storage.etag(fs, path)  # S3: changes with every write, even a same-second, same-size one
    if tag is not None:
        fp["etag"] = tag
    return fp


def file_digest(path: str | os.PathLike, fs: pafs.FileSystem | None = None) -> str:
    """sha256 of the whole file, read once from start to end."""
    h = hashlib.sha256()
    with (fs or local_fs()).open_input_stream(str(path)) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def detect_change(recorded: dict | None, current: dict, path: str | os.PathLike,
                  fs: pafs.FileSystem | None = None) -> tuple[bool, dict]:
    """Whether an input changed since ``recorded`` (its fingerprint when it was scored).

    Size, mtime and footer hash first; only when one of them moved is the whole file hashed and compared with
    the recorded sha256 (a copy or ``touch`` keeps the content: unchanged). Entries written before digests were
    recorded count as changed when any cheap field moved.

    Returns:
        ``(changed, fingerprint)``: the fingerprint to record (with the sha256 when it was computed).
    """
    if not recorded:
        return True, current
    cheap = ("size", "mtime_ns", "tail_sha256", "etag")
    if all(recorded.get(k) == current.get(k) for k in cheap):
        return False, {**current, "sha256": recorded.get("sha256")}
    if not recorded.get("sha256") or recorded.get("size") != current.get("size"):
        return True, current
    digest = file_digest(path, fs)
    return digest != recorded["sha256"], {**current, "sha256": digest}


class DigestingFile(io.RawIOBase):
    """A read-only file for ``pq.ParquetFile`` that hashes the file's bytes, in order, as the reader fetches them.

    Bytes the reader skips (columns not selected, row groups before a resume point) are read here to fill the
    gap; the footer, read first, is hashed at the end. So the digest costs no second pass over the columns
    scored. Call :meth:`start` once the Parquet footer was read, then :meth:`hexdigest` when done.
    """

    def __init__(self, path: str | os.PathLike, fs: pafs.FileSystem | None = None):
        super().__init__()
        fs = fs or local_fs()
        self._f = fs.open_input_file(str(path))
        self._gap = fs.open_input_file(str(path))
        self._size = self._f.size()
        self._hash = hashlib.sha256()
        self._done = 0  # bytes [0, _done) are hashed
        self._on = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self._on = True

    def _fill(self, upto: int) -> None:
        while self._done < upto:
            n = min(_CHUNK, upto - self._done)
            self._hash.update(self._gap.read_at(n, self._done))
            self._done += n

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            pos = self._f.tell()
            data = self._f.read() if n is None or n < 0 else self._f.read(n)
            if self._on and data:
                end = pos + len(data)
                if pos > self._done:
                    self._fill(pos)
                if end > self._done:
                    self._hash.update(memoryview(data)[self._done - pos:])
                    self._done = end
            return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        """The sha256 of the whole file (reads whatever the reader did not)."""
        with self._lock:
            self._fill(self._size)
            return self._hash.hexdigest()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self._gap.close()
        super().close()

