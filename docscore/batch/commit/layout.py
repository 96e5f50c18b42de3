"""Where everything lives in an output ``OUT``: every name docscore writes there, and the three file-system helpers
every part of the commit package uses.

Everything docscore keeps besides the outputs starts with ``_``, so Spark, Hive and ``pyarrow.dataset`` skip it; no
staged name ends in ``.parquet``, so the ``OUT/**/*.parquet`` globs of polars and DuckDB, which do descend into
``_`` folders, never count it::

    OUT/<rel>.parquet                                   one output per input shard, renamed into place when whole
    OUT/_docscore_run.json                              the run manifest (:mod:`~docscore.batch.commit.state`)
    OUT/_docscore_journal.jsonl                         shard events since the manifest was last rewritten
    OUT/_docscore_summary.json                          the last run's summary
    OUT/_SUCCESS                                        every input of the last run has its output
    OUT/_docscore/lock.json                             the writer lock: host, pid, start time, heartbeat, token
    OUT/_docscore/journal/NNNNNNNN.json                 object stores: one journal event per object
    OUT/_docscore/staging/<rel>.parts/part-NNNNN.staged  committed parts of a shard still in progress
    OUT/_docscore/staging/<rel>.parts/*.inprogress       files being written (a killed run's are removed); on an
                                                        object store these live in a local temporary folder
    OUT/_docscore/reuse/<rel>.<tag>.scores              score files for reuse (:mod:`docscore.batch.scorefiles`)
"""

from __future__ import annotations

import pyarrow.fs as pafs

from docscore import storage

META_DIR = "_docscore"
LOCK_NAME = "lock.json"
STAGING_DIR = "staging"
PARTS_SUFFIX = ".parts"  # a folder, so never "*.parquet": a glob would take a folder named x.parquet for a file
STAGED = ".staged"
INPROGRESS = ".inprogress"
WORK_PREFIX = "docscore-staging-"  # object stores: <tmp>/docscore-staging-<pid>-*/, files being written
LEGACY_PARTS_DIR = "_parts"  # docscore before this layout: OUT/_parts/<rel>/part-NNNNN.parquet
RUN_MANIFEST = "_docscore_run.json"
JOURNAL = "_docscore_journal.jsonl"
JOURNAL_DIR = "journal"  # object stores: META_DIR/journal/NNNNNNNN.json, one event each
SUMMARY = "_docscore_summary.json"
SUCCESS = "_SUCCESS"


def local_fs() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    """Remove a folder and its contents. On GCS pyarrow deletes the contents, then fails (404) on a folder that had
    no marker object of its own (one that exists only as the prefix of its files): it is gone all the same."""
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        if storage.exists(fs, path):
            raise

