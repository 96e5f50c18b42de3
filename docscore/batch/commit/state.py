"""The run manifest in the output directory: what was scored, with which bundle and options, from which inputs.

Layout of ``OUT``::

    OUT/<rel>.parquet             one output per input shard (same relative path), renamed into place when whole
    OUT/_docscore/                the writer lock and the staging of shards in progress (see
                                  :mod:`docscore.batch.commit.staging`): no reader counts anything there as data
    OUT/_docscore_run.json        the run manifest (below), rewritten atomically at the start and end of a run
    OUT/_docscore_journal.jsonl   shard events since the last rewrite, one JSON line each, appended and flushed
    OUT/_docscore_summary.json    the last run's summary (rows, errors, docs/s, tokens/s, pad fraction, ...)
    OUT/_SUCCESS                  written when every input of the last run has its output

``_docscore_run.json``::

    {
      "format": "docscore-run/1",
      "bundle": {"path": ..., "sha256": ..., "variant": ...},
      "options": {...the ScoreOptions outputs depend on...},
      "shards": {"<rel>": {"input": <path>, "fingerprint": {"size", "mtime_ns", "tail_sha256", "sha256"},
                           "status": "pending" | "done" | "failed", "rows": N, "parts": P, "errors": E,
                           "columns": {name: arrow type}, "error": ...}}
    }

The journal keeps a rerun's bookkeeping O(1) per shard on archives of thousands of files; a torn last line
(a kill mid-append) is ignored, and the shard it described is redone. An object store cannot append: there each
event is one small object, ``OUT/_docscore/journal/NNNNNNNN.json`` (written whole by one PUT), replayed in order.
The journal is the commit record: an output counts as done only once its "done" event is written.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable

import pyarrow.fs as pafs

from docscore import storage
from docscore.batch.commit.layout import META_DIR
from docscore.batch.commit.staging import Staging
from docscore.errors import ConfigError
from docscore.storage import Location

log = logging.getLogger(__name__)

RUN_FORMAT = "docscore-run/1"
RUN_MANIFEST = "_docscore_run.json"
JOURNAL = "_docscore_journal.jsonl"
JOURNAL_DIR = "journal"  # object stores: META_DIR/journal/NNNNNNNN.json, one event each
SUMMARY = "_docscore_summary.json"
SUCCESS = "_SUCCESS"


def write_json_atomic(path: str | os.PathLike, data: dict, fs: pafs.FileSystem | None = None) -> None:
    storage.write_bytes(fs, path, (json.dumps(data, indent=2) + "\n").encode())


class RunState:
    """The manifest of one output directory, loaded (and checked) or created."""

    def __init__(self, out: Location, header: dict, shards: dict[str, dict], journal_seq: int = 0,
                 fence: Callable[[], None] | None = None):
        self.out = out
        self.fs = out.fs
        self.header = header
        self.shards = shards
        self.fence = fence or (lambda: None)  # proves the run still holds the lock (WriterLock.check)
        self.staging = Staging(out.path, out.fs, fence)
        self._journal = None
        self._seq = journal_seq  # object stores: the next journal event's number

    def path(self, rel: str) -> str:
        """The file-system path of ``rel`` below the output."""
        return self.out.join(rel)

    def has_output(self, rel: str) -> bool:
        return storage.is_file(self.fs, self.path(rel))

    @classmethod
    def open(cls, out: Location, bundle: dict, options: dict, overwrite: bool,
             fence: Callable[[], None] | None = None) -> "RunState":
        """Load the manifest of ``out`` and refuse a different bundle or options (unless ``overwrite``, which
        discards the earlier outputs); create a fresh one when there is none.

        Args:
            fence: called before every write to ``out`` (the journal, the manifest, removals): raises when the run
                no longer holds the output's lock (:meth:`~docscore.batch.commit.lock.WriterLock.check`).
        """
        out.fs.create_dir(out.path, recursive=True)
        header = {"format": RUN_FORMAT, "bundle": bundle, "options": options}
        if storage.is_file(out.fs, out.join(RUN_MANIFEST)):
            old = cls._load(out, fence)
            problems = []
            if old.header.get("bundle", {}).get("sha256") != bundle["sha256"]:
                problems.append(f"the bundle changed (sha256 {old.header.get('bundle', {}).get('sha256', '?')[:12]} "
                                f"then, {bundle['sha256'][:12]} now)")
            if old.header.get("bundle", {}).get("variant") != bundle["variant"]:
                problems.append(f"the variant changed ({old.header.get('bundle', {}).get('variant')} then, "
                                f"{bundle['variant']} now)")
            before = old.header.get("options", {})
            changed = sorted(k for k in set(before) | set(options) if before.get(k) != options.get(k))
            if changed:
                problems.append("options changed: " + ", ".join(
                    f"{k} {before.get(k)!r} -> {options.get(k)!r}" for k in changed))
            if not problems:
                old.header = header
                return old
            if not overwrite:
                raise ConfigError(
                    f"{out} holds the outputs of an earlier run, and " + "; ".join(problems)
                    + ". Rerun with --overwrite to discard them, or write to another --output directory"
                )
            log.warning("discarding the earlier outputs in %s: %s", out, "; ".join(problems))
            old.discard_all()
        elif not overwrite and _any_parquet(out):
            raise ConfigError(f"{out} already holds Parquet files but no {RUN_MANIFEST}; "
                              "pick an empty --output directory or pass --overwrite")
        state = cls(out, header, {}, fence=fence)
        state.compact()
        return state

    @classmethod
    def _load(cls, out: Location, fence: Callable[[], None] | None = None) -> "RunState":
        try:
            data = json.loads(storage.read_bytes(out.fs, out.join(RUN_MANIFEST)))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"cannot read {out.uri_of(out.join(RUN_MANIFEST))}: {e}; pass --overwrite to start "
                              "over") from e
        if data.get("format") != RUN_FORMAT:
            raise ConfigError(f"{out.uri_of(out.join(RUN_MANIFEST))} has format {data.get('format')!r}, expected "
                              f"{RUN_FORMAT}")
        shards = dict(data.get("shards", {}))
        lines, seq = _journal_lines(out)
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # torn last line of a killed run
            if event["entry"] is None:
                shards.pop(event["rel"], None)
            else:
                shards[event["rel"]] = event["entry"]
        header = {k: v for k, v in data.items() if k != "shards"}
        return cls(out, header, shards, seq, fence)

    def record(self, rel: str, entry: dict | None) -> None:
        """Set a shard's entry (``None`` removes it) and append it to the journal (flushed, or one whole object
        on an object store: it survives the process being killed)."""
        self.fence()
        if entry is None:
            self.shards.pop(rel, None)
        else:
            self.shards[rel] = entry
        line = json.dumps({"rel": rel, "entry": entry})
        if not self.out.is_local:
            storage.write_bytes(self.fs, self.out.join(f"{META_DIR}/{JOURNAL_DIR}/{self._seq:08d}.json"),
                                line.encode())
            self._seq += 1
            return
        if self._journal is None:
            self._journal = open(self.out.join(JOURNAL), "a", encoding="utf-8")
        self._journal.write(line + "\n")
        self._journal.flush()

    def compact(self) -> None:
        """Rewrite the manifest with every shard and empty the journal (replaying it again is harmless)."""
        self.fence()
        write_json_atomic(self.out.join(RUN_MANIFEST), {**self.header, "shards": self.shards}, self.fs)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.fence()  # a new holder's journal is never emptied by a run that lost the lock meanwhile
        storage.delete(self.fs, self.out.join(JOURNAL))
        for path in _journal_objects(self.out):  # oldest first: a kill leaves a suffix, which replays harmlessly
            storage.delete(self.fs, path)
        self._seq = 0

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def discard(self, rel: str) -> None:
        """Remove a shard's output and committed parts."""
        self.fence()
        storage.delete(self.fs, self.path(rel))
        self.staging.discard(rel)
        self.shards.pop(rel, None)

    def forget(self, rel: str) -> None:
        """Remove a shard's output, then its entry (journaled), e.g. when its input was deleted (``prune``)."""
        self.discard(rel)
        self.record(rel, None)

    def discard_all(self) -> None:
        self.fence()
        for rel in list(self.shards):
            self.discard(rel)
        self.staging.remove_all()
        for name in (RUN_MANIFEST, JOURNAL, SUMMARY, SUCCESS):
            storage.delete(self.fs, self.out.join(name))
        for path in _journal_objects(self.out):
            storage.delete(self.fs, path)
        self._seq = 0


def _any_parquet(out: Location) -> bool:
    selector = pafs.FileSelector(out.path, recursive=True, allow_not_found=True)
    return any(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in out.fs.get_file_info(selector))


def _journal_objects(out: Location) -> list[str]:
    """The journal's event objects (object stores), oldest first."""
    if out.is_local:
        return []
    selector = pafs.FileSelector(out.join(f"{META_DIR}/{JOURNAL_DIR}"), allow_not_found=True)
    return sorted(i.path for i in out.fs.get_file_info(selector)
                  if i.type == pafs.FileType.File and i.path.endswith(".json"))


def _journal_lines(out: Location) -> tuple[list[str], int]:
    """The journal's events since the last compaction, and the next event's number."""
    if out.is_local:
        raw = storage.read_bytes(out.fs, out.join(JOURNAL))
        return (raw.decode("utf-8", "replace").splitlines() if raw else []), 0
    paths = _journal_objects(out)
    lines = [storage.read_bytes(out.fs, p).decode() for p in paths]
    seq = int(paths[-1].rsplit("/", 1)[1].split(".")[0]) + 1 if paths else 0
    return lines, seq
