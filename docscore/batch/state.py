"""The run manifest in the output directory: what was scored, with which bundle and options, from which inputs.

Layout of ``OUT``::

    OUT/<rel>.parquet             one output per input shard (same relative path), renamed into place when whole
    OUT/_docscore/                the writer lock and the staging of shards in progress (see
                                  :mod:`docscore.batch.commit`): no reader counts anything there as data
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
(a kill mid-append) is ignored, and the shard it described is redone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from docscore.batch.commit import Staging
from docscore.errors import ConfigError

log = logging.getLogger(__name__)

RUN_FORMAT = "docscore-run/1"
RUN_MANIFEST = "_docscore_run.json"
JOURNAL = "_docscore_journal.jsonl"
SUMMARY = "_docscore_summary.json"
SUCCESS = "_SUCCESS"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        e.filename = e.filename or str(tmp)
        raise


class RunState:
    """The manifest of one output directory, loaded (and checked) or created."""

    def __init__(self, out: Path, header: dict, shards: dict[str, dict]):
        self.out = out
        self.header = header
        self.shards = shards
        self.staging = Staging(out)
        self._journal = None

    @classmethod
    def open(cls, out: Path, bundle: dict, options: dict, overwrite: bool) -> "RunState":
        """Load the manifest of ``out`` and refuse a different bundle or options (unless ``overwrite``, which
        discards the earlier outputs); create a fresh one when there is none."""
        out.mkdir(parents=True, exist_ok=True)
        header = {"format": RUN_FORMAT, "bundle": bundle, "options": options}
        path = out / RUN_MANIFEST
        if path.is_file():
            old = cls._load(out)
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
        elif not overwrite and any(p.is_file() for p in out.rglob("*.parquet")):
            raise ConfigError(f"{out} already holds Parquet files but no {RUN_MANIFEST}; "
                              "pick an empty --output directory or pass --overwrite")
        state = cls(out, header, {})
        state.compact()
        return state

    @classmethod
    def _load(cls, out: Path) -> "RunState":
        try:
            data = json.loads((out / RUN_MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {out / RUN_MANIFEST}: {e}; pass --overwrite to start over") from e
        if data.get("format") != RUN_FORMAT:
            raise ConfigError(f"{out / RUN_MANIFEST} has format {data.get('format')!r}, expected {RUN_FORMAT}")
        shards = dict(data.get("shards", {}))
        journal = out / JOURNAL
        if journal.is_file():
            for line in journal.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # torn last line of a killed run
                if event["entry"] is None:
                    shards.pop(event["rel"], None)
                else:
                    shards[event["rel"]] = event["entry"]
        header = {k: v for k, v in data.items() if k != "shards"}
        return cls(out, header, shards)

    def record(self, rel: str, entry: dict | None) -> None:
        """Set a shard's entry (``None`` removes it) and append it to the journal (flushed: it survives the
        process being killed)."""
        if entry is None:
            self.shards.pop(rel, None)
        else:
            self.shards[rel] = entry
        if self._journal is None:
            self._journal = open(self.out / JOURNAL, "a", encoding="utf-8")
        self._journal.write(json.dumps({"rel": rel, "entry": entry}) + "\n")
        self._journal.flush()

    def compact(self) -> None:
        """Rewrite the manifest with every shard and empty the journal (replaying it again is harmless)."""
        write_json_atomic(self.out / RUN_MANIFEST, {**self.header, "shards": self.shards})
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        (self.out / JOURNAL).unlink(missing_ok=True)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def discard(self, rel: str) -> None:
        """Remove a shard's output and committed parts."""
        (self.out / rel).unlink(missing_ok=True)
        self.staging.discard(rel)
        self.shards.pop(rel, None)

    def forget(self, rel: str) -> None:
        """Remove a shard's output, then its entry (journaled), e.g. when its input was deleted (``prune``)."""
        self.discard(rel)
        self.record(rel, None)

    def discard_all(self) -> None:
        for rel in list(self.shards):
            self.discard(rel)
        self.staging.remove_all()
        for name in (RUN_MANIFEST, JOURNAL, SUMMARY, SUCCESS):
            (self.out / name).unlink(missing_ok=True)
