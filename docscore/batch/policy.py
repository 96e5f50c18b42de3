"""What a night does with each input, and the health of the result.

New inputs are scored; finished, unchanged ones skipped (size + mtime + footer, then the content digest when one
of them moved: :func:`~docscore.batch.commit.fingerprint.detect_change`); unfinished ones resumed; changed ones follow
``ScoreOptions.on_change`` and deleted ones ``ScoreOptions.prune``. Every decision lands in the run summary.
:func:`account` then computes the row error rate over the outputs of the run's inputs and per-file schema drift.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from docscore import storage
from docscore.batch.commit.committer import record_failure
from docscore.batch.commit.fingerprint import detect_change, stat_fingerprint
from docscore.batch.inputs import InputFile, Shard
from docscore.batch.options import ScoreOptions
from docscore.batch.commit.state import RunState
from docscore.errors import ConfigError, DocscoreError, InputDataError
from docscore.storage import has_scheme, resolve

if TYPE_CHECKING:
    from docscore.batch.summary import RunSummary

log = logging.getLogger(__name__)


def plan_shards(shards: list[Shard], state: RunState, options: ScoreOptions, summary: "RunSummary"):
    """Fingerprint every shard: skip finished unchanged ones; a changed finished one per ``on_change``.

    Returns:
        ``({shard: fingerprint}, total rows)`` of the shards to score, in input order.
    """
    todo: dict[Shard, dict] = {}
    total_rows = 0
    for shard in shards:
        entry = state.shards.get(shard.rel)
        try:
            fp = stat_fingerprint(shard.path, shard.fs)
            changed, fp = detect_change(entry.get("fingerprint") if entry else None, fp, shard.path, shard.fs)
        except OSError as e:
            record_failure(state, summary, shard, None, InputDataError(f"cannot read: {e}", path=shard.name), options)
            continue
        if entry and entry.get("status") == "done":
            if changed:
                action = {"rescore": "rescored", "refuse": "refused", "keep": "kept"}[options.on_change]
                summary.changed.append({"path": shard.name, "output": shard.rel, "action": action})
                log.warning("%s changed since it was scored: %s (--on-change %s)", shard.name, action,
                            options.on_change)
                if action != "rescored":
                    continue
                state.staging.discard(shard.rel)  # the old output stays readable until the new one replaces it
            elif state.has_output(shard.rel):
                summary.files_skipped += 1
                summary.skipped.append(shard.rel)
                if fp != entry.get("fingerprint"):  # e.g. touched or copied: same digest, new mtime
                    state.record(shard.rel, {**entry, "fingerprint": fp})
                continue
        elif entry and changed and entry.get("fingerprint"):
            log.info("%s changed since its unfinished run; starting it over", shard.name)
            state.discard(shard.rel)
        todo[shard] = fp
        try:
            total_rows += pq.read_metadata(shard.path, filesystem=shard.fs).num_rows
        except Exception:  # noqa: BLE001 - an unreadable footer is reported when the shard is read
            pass
    return todo, total_rows


def handle_deleted(shards: list[Shard], state: RunState, options: ScoreOptions, summary: "RunSummary") -> None:
    """Outputs whose input file no longer exists: removed with ``prune``, else kept and reported."""
    current = {s.rel for s in shards}
    for rel, entry in sorted(state.shards.items()):
        source = entry.get("input")
        if rel in current or not source or _exists(source, options.s3_endpoint):
            continue
        action = "pruned" if options.prune else "kept"
        summary.deleted.append({"input": source, "output": rel, "action": action})
        if options.prune:
            log.warning("%s was deleted: removing its output %s", source, rel)
            state.forget(rel)
        else:
            log.warning("%s was deleted but its output %s is kept (pass --prune to remove it)", source, rel)


def _exists(source: str, endpoint: str | None) -> bool:
    """Whether a recorded input (a local path or a URI) still exists; an unreachable store counts as existing."""
    if not has_scheme(source):
        return os.path.exists(source)
    try:
        loc = resolve(source, endpoint)
        return storage.exists(loc.fs, loc.path)
    except (OSError, DocscoreError):
        return True


def check_text_column(shards: list[Shard], text_column: str) -> None:
    """Refuse a ``--text-column`` that no readable input file has (a typo, another team's schema) before the output
    is touched: otherwise every file fails one by one. Reads footers only, up to the first file that has it.

    Raises:
        ConfigError: naming the column, how many files were looked at and their text-like columns.
    """
    found: dict[str, None] = {}
    looked = 0
    for shard in shards:
        fs = shard.fs or pafs.LocalFileSystem()
        try:
            with fs.open_input_file(str(shard.path)) as f:
                schema = InputFile(f, shard.partitions, [text_column]).schema
        except (OSError, ValueError, pa.ArrowException):
            continue  # an unreadable file is reported on its own
        looked += 1
        if text_column in schema.names:
            return
        for fld in schema:
            if pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type) or pa.types.is_binary(fld.type):
                found[fld.name] = None
    if looked:
        hint = f"pass --text-column {next(iter(found))}" if found else "pass --text-column NAME"
        raise ConfigError(f"--text-column {text_column!r} is in none of the {looked} input file(s); their text "
                          f"columns: {', '.join(found) or 'none'}; {hint} (a struct field as parent.field)")


def account(shards: list[Shard], state: RunState, summary: "RunSummary") -> None:
    """Row error rate over the outputs of this run's inputs, and per-file schema drift of the columns read."""
    entries = [(s, state.shards[s.rel]) for s in shards if state.shards.get(s.rel, {}).get("status") == "done"]
    for _, e in entries:
        if "errors" in e:
            summary.output_rows += e.get("rows", 0)
            summary.output_errors += e["errors"]
    typed = [(s, e["columns"]) for s, e in entries if e.get("columns")]
    names = {n for _, cols in typed for n in cols}
    expected = {n: Counter(cols[n] for _, cols in typed if n in cols).most_common(1)[0][0] for n in names}
    for shard, cols in typed:
        odd = {n: t for n, t in cols.items() if t != expected[n]}
        if odd:
            summary.schema_drift.append({"path": shard.name, "columns": odd,
                                         "expected": {n: expected[n] for n in odd}})
