"""Input change detection: size + mtime + footer hash (+ the ETag on S3) on every night, and the sha256 of the
whole file, computed while the scorer reads it (:class:`DigestingFile`) and checked only when the cheap fingerprint
moved, so a same-size rewrite is caught without hashing the archive every night."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading

import pyarrow.fs as pafs

from docscore import storage
from docscore.batch.commit.layout import local_fs
from docscore.files import sha256_file

_TAIL_BYTES = 1 << 16  # the Parquet footer (schema, row groups, statistics) lives at the end of the file
_CHUNK = 1 << 22


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
    digest = sha256_file(path, fs)
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
