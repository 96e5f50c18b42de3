"""Staging: where committed parts and in-progress files of a shard go, how they are published into ``OUT/<rel>``,
and cleaning what earlier killed runs (and docscore versions before this layout) left. On an object store a rename
into place is an upload of the finished local file to its final key."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from typing import Callable

import pyarrow.fs as pafs

from docscore import storage
from docscore.batch.commit.layout import (INPROGRESS, LEGACY_PARTS_DIR, META_DIR, PARTS_SUFFIX, STAGED,
                                          STAGING_DIR, WORK_PREFIX, delete_dir, join, local_fs)
from docscore.batch.commit.lock import pid_alive

log = logging.getLogger(__name__)


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
        self.root = join(self.out, META_DIR, STAGING_DIR)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.work_fs = self.fs if self.local else local_fs()  # where in-progress files are written
        self.fence = fence or _unfenced  # proves the run still holds the lock (WriterLock.check) before a change
        self._work_dir: str | None = None
        self._tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # in-progress names of this run's own

    def shard_dir(self, rel: str) -> str:
        return join(self.root, rel + PARTS_SUFFIX)

    def part(self, rel: str, index: int) -> str:
        """A committed part (renamed or uploaded into place only when whole)."""
        return join(self.shard_dir(rel), f"part-{index:05d}{STAGED}")

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
        path = join(self.shard_dir(rel), f"{name}.{self._tag}{INPROGRESS}")
        self.fs.create_dir(self.shard_dir(rel), recursive=True)
        return path

    def committed_parts(self, rel: str, n_parts: int) -> int:
        """How many leading parts are committed (a part exists only once it was renamed into place)."""
        done = 0
        while done < n_parts and storage.exists(self.fs, self.part(rel, done)):
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
        return join(self.shard_dir(rel), name)

    def commit_file(self, tmp: str, rel: str, name: str) -> None:
        self._place(tmp, self.staged_file(rel, name))

    def publish(self, tmp: str, rel: str) -> None:
        """Move a whole file (an output, a score file) into ``OUT/<rel>`` (a rename on a local disk, an upload to the final key on an
        object store: atomic either way)."""
        self._place(tmp, join(self.out, rel))

    def discard(self, rel: str) -> None:
        self.fence()
        if storage.exists(self.fs, self.shard_dir(rel)):
            delete_dir(self.fs, self.shard_dir(rel))

    def clean(self, keep: set[str]) -> list[str]:
        """Remove what killed runs left: in-progress files, the staging of shards not in ``keep`` (the unfinished
        shards whose committed parts a resume reuses), and the pre-``_docscore`` layout's ``_parts`` folder and
        ``*.parquet.tmp`` files beside the outputs. Returns the paths removed."""
        self.fence()
        removed = []
        if storage.exists(self.fs, self.root):
            for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
                if info.type == pafs.FileType.File and info.path.endswith(INPROGRESS):
                    self.fs.delete_file(info.path)
                    removed.append(info.path)
            for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
                if info.type == pafs.FileType.Directory and info.path.endswith(PARTS_SUFFIX):
                    rel = info.path[len(self.root) + 1:-len(PARTS_SUFFIX)]
                    if rel not in keep and storage.exists(self.fs, info.path):
                        delete_dir(self.fs, info.path)
                        removed.append(info.path)
        legacy = join(self.out, LEGACY_PARTS_DIR)
        if storage.exists(self.fs, legacy):
            delete_dir(self.fs, legacy)
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
        if storage.exists(self.fs, self.root):
            delete_dir(self.fs, self.root)

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
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(os.path.join(root, name))
    return removed
