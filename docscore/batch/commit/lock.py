"""The writer lock: one run writes an output at a time, and a run that lost the lock stops.

:class:`WriterLock` is created atomically (``O_CREAT | O_EXCL`` on a disk, a conditional PUT on an object store:
:func:`docscore.storage.create_exclusive`). A lock whose process is dead (same host) or whose heartbeat is older
than ``stale_after_s`` (another host) is taken over, under a second exclusive "break" file so two runs cannot both
take it over. It fences: every commit step first proves the run still holds it (:meth:`WriterLock.check`), and a
run that lost it stops with :class:`~docscore.errors.LockLostError`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import pyarrow.fs as pafs

from docscore import storage
from docscore.batch.commit.layout import LOCK_NAME, META_DIR, join, local_fs
from docscore.errors import LockHeldError, LockLostError

log = logging.getLogger(__name__)


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


def pid_alive(pid: int) -> bool:
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
        self.path = join(self.out, META_DIR, LOCK_NAME)
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
            if not pid_alive(info.pid):
                return True
            return info.proc_start is not None and _proc_start(info.pid) not in (None, info.proc_start)
        return time.time() - info.heartbeat > self.stale_after_s

    def acquire(self) -> "WriterLock":
        """Take the lock or raise :class:`LockHeldError` naming the holder; a stale lock is taken over."""
        self.fs.create_dir(join(self.out, META_DIR), recursive=True)
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
