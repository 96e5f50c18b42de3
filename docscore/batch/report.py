"""Summaries of a finished scoring run, read lazily with polars (only the columns needed)."""

from __future__ import annotations

import json
from pathlib import Path

from docscore.batch.commit import WriterLock
from docscore.errors import InputDataError
from docscore.batch.state import RUN_MANIFEST, SUCCESS, SUMMARY


def output_files(out: str | Path) -> list[Path]:
    """The outputs the run manifest lists as done (never temporary files or committed parts)."""
    out = Path(out)
    manifest = out / RUN_MANIFEST
    if not manifest.is_file():
        raise InputDataError(f"{out} is not a docscore score output: {RUN_MANIFEST} is missing", path=out)
    shards = json.loads(manifest.read_text()).get("shards", {})
    return [out / rel for rel, entry in sorted(shards.items()) if entry.get("status") == "done"]


def last_run(out: str | Path) -> dict:
    """The decisions of the last run on ``out`` (from ``_docscore_summary.json``): files scored / skipped /
    changed / deleted / failed, the row error rate, schema drift, whether it was healthy and ``_SUCCESS``."""
    out = Path(out)
    try:
        s = json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}
    keys = ("scored", "skipped", "changed", "deleted", "failed", "schema_drift", "error_rate", "max_error_rate",
            "problems", "ok")
    lock = WriterLock(out)
    holder = lock.holder()
    running = holder.describe() if holder is not None and not lock.is_stale(holder) else None
    return {**{k: s.get(k) for k in keys}, "success_marker": (out / SUCCESS).exists(), "running": running}


def summarize(out: str | Path, bins: int = 10) -> dict:
    """Label distribution, confidence and error counts over every finished output of ``out``.

    Returns:
        ``{"files", "rows", "errors": {reason: n}, "labels": [{"label", "rows", "share", "mean_score",
        "p10_score", "median_score"}], "confidence": [{"bin_low", "bin_high", "rows"}]}``; scores are the
        predicted label's score (probability; for regression the predicted value, and no label rows); plus
        ``"last_run"``: see :func:`last_run`.
    """
    import polars as pl

    files = output_files(out)
    if not files:
        return {"files": 0, "rows": 0, "errors": {}, "labels": [], "confidence": [], "last_run": last_run(out)}
    lf = pl.scan_parquet([str(f) for f in files]).select("label", "score", "error")
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
        "rows": rows,
        "errors": dict(zip(errors["error"].to_list(), errors["len"].to_list())),
        "labels": labels.select("label", "rows", "share", "mean_score", "p10_score", "median_score").to_dicts(),
        "confidence": [{"bin_low": edges[b], "bin_high": edges[b + 1], "rows": int(counts.get(b, 0))}
                       for b in range(bins)],
        "last_run": last_run(out),
    }
