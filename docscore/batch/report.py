"""Summaries of a finished scoring run, read lazily with polars (only the columns needed)."""

from __future__ import annotations

import json
from pathlib import Path

from docscore import storage
from docscore.batch.commit.lock import WriterLock
from docscore.batch.commit.layout import RUN_MANIFEST, SUCCESS, SUMMARY
from docscore.errors import InputDataError
from docscore.storage import Location


def _location(out: str | Path | Location, endpoint: str | None = None) -> Location:
    return out if isinstance(out, Location) else storage.resolve(out, endpoint)


def output_files(out: str | Path | Location, endpoint: str | None = None) -> list[str]:
    """The outputs the run manifest lists as done (never temporary files or committed parts), as paths on the
    output's file system."""
    loc = _location(out, endpoint)
    try:
        raw = storage.read_bytes(loc.fs, loc.join(RUN_MANIFEST))
    except OSError as e:
        raise InputDataError(f"cannot read {loc.uri}: {storage.explain(e)}", path=loc.uri) from e
    if raw is None:
        raise InputDataError(f"{loc.uri} is not a docscore score output: {RUN_MANIFEST} is missing", path=loc.uri)
    shards = json.loads(raw).get("shards", {})
    return [loc.join(rel) for rel, entry in sorted(shards.items()) if entry.get("status") == "done"]


def last_run(out: str | Path | Location, endpoint: str | None = None) -> dict:
    """The decisions of the last run on ``out`` (from ``_docscore_summary.json``): files scored / skipped /
    changed / deleted / failed, the row error rate, schema drift, whether it was healthy and ``_SUCCESS``."""
    loc = _location(out, endpoint)
    try:
        s = json.loads(storage.read_bytes(loc.fs, loc.join(SUMMARY)))
    except (OSError, ValueError, TypeError):
        return {}
    keys = ("scored", "skipped", "changed", "deleted", "failed", "schema_drift", "error_rate", "max_error_rate",
            "problems", "ok")
    lock = WriterLock(loc.path, loc.fs)
    holder = lock.holder()
    running = holder.describe() if holder is not None and not lock.is_stale(holder) else None
    return {**{k: s.get(k) for k in keys}, "success_marker": storage.exists(loc.fs, loc.join(SUCCESS)),
            "running": running}


def summarize(out: str | Path | Location, bins: int = 10, endpoint: str | None = None) -> dict:
    """Label distribution, confidence and error counts over every finished output of ``out``.

    Returns:
        ``{"files", "rows", "scored_rows", "error_rows", "errors": {reason: n}, "labels": [{"label", "rows",
        "share", "mean_score", "p10_score", "median_score"}], "confidence": [{"bin_low", "bin_high", "rows"}]}``;
        ``rows = scored_rows + error_rows``; label shares and the confidence bins are over the scored rows; scores
        are the predicted label's score (probability; for regression the predicted value, and no label rows); plus
        ``"last_run"``: see :func:`last_run`.
    """
    import polars as pl

    loc = _location(out, endpoint)
    files = output_files(loc)
    if not files:
        return {"files": 0, "rows": 0, "scored_rows": 0, "error_rows": 0, "errors": {}, "labels": [],
                "confidence": [], "last_run": last_run(loc)}
    if loc.is_local:
        lf = pl.scan_parquet(files)
    else:  # polars reads the store through the same pyarrow file system (credentials from the same chain)
        import pyarrow.dataset as ds

        lf = pl.scan_pyarrow_dataset(ds.dataset(files, format="parquet", filesystem=loc.fs))
    lf = lf.select("label", "score", "error")
    rows = lf.select(pl.len()).collect().item()
    errors = lf.filter(pl.col("error").is_not_null()).group_by("error").len().sort("error").collect()
    ok = lf.filter(pl.col("error").is_null())
    labels = (
        ok.filter(pl.col("label").is_not_null())
        .group_by("label")
        .agg(pl.len().alias("rows"), pl.col("score").mean().alias("mean_score"),
             pl.col("score").quantile(0.1).alias("p10_score"), pl.col("score").median().alias("median_score"))
        .sort(["rows", "label"], descending=[True, False])
        .collect()
    )
    scored = int(labels["rows"].sum()) if labels.height else 0
    labels = labels.with_columns((pl.col("rows") / max(scored, 1)).alias("share"))
    edges = [i / bins for i in range(bins + 1)]
    conf = (
        ok.select(pl.col("score").clip(0.0, 1.0))
        .with_columns(((pl.col("score") * bins).floor().clip(0, bins - 1)).cast(pl.Int64).alias("bin"))
        .group_by("bin").len().sort("bin").collect()
    )
    counts = dict(zip(conf["bin"].to_list(), conf["len"].to_list()))
    return {
        "files": len(files),
        "rows": rows,  # = scored_rows + error_rows
        "scored_rows": rows - sum(errors["len"].to_list()),
        "error_rows": sum(errors["len"].to_list()),
        "errors": dict(zip(errors["error"].to_list(), errors["len"].to_list())),
        "labels": labels.select("label", "rows", "share", "mean_score", "p10_score", "median_score").to_dicts(),
        "confidence": [{"bin_low": edges[b], "bin_high": edges[b + 1], "rows": int(counts.get(b, 0))}
                       for b in range(bins)],
        "last_run": last_run(loc),
    }
