"""The invariance check: a variant's outputs for a text must not depend on how the text was batched.

The gate scores the same texts through the real :class:`~docscore.batch.scorer.Scorer` several ways — one row per
inference call, mixed-length batches under a small and a large token budget, small sort windows — and compares
every output column. Bit-identical outputs pass. Where a kernel makes that impossible, the variant passes only
with ``max |Δscore| <= SCORE_TOLERANCE`` and no label change, and the report says it is not bit-identical.
Torch-free, so ``docscore verify`` runs it on a scoring host too.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

# The contract's fallback bound for a variant whose kernels cannot be bit-identical across batch shapes.
SCORE_TOLERANCE = 1e-6

# How the same texts are batched: (name, ScoreOptions overrides). "alone" is the reference.
LAYOUTS = (
    ("alone", {"max_batch_rows": 1, "sort_window": 1}),
    ("budget_256", {"token_budget": 256, "sort_window": 64}),
    ("budget_8192", {"token_budget": 8192, "sort_window": 2048}),
    ("rows_3_window_7", {"max_batch_rows": 3, "sort_window": 7}),
)


def _texts_for(texts: list[str], long_text: str | None, limit: int) -> list[str]:
    """Up to ``limit`` texts spread over every length, plus a text past max_length and duplicates of a few (the
    same text in different company)."""
    picked = list(texts[:limit])
    if long_text:
        picked.append(long_text)
    picked += picked[:: max(1, len(picked) // 5)][:5]
    return picked


def check_invariance(bundle, variant: str, texts: list[str], *, threads: int | None = None,
                     long_text: str | None = None, limit: int = 200, long_docs: str = "truncate",
                     device: str = "cpu") -> dict:
    """Score ``texts`` under every layout of :data:`LAYOUTS` and compare with scoring each row alone.

    Args:
        bundle: a :class:`~docscore.bundle.Bundle` (its manifest must already describe ``variant``).
        variant: the variant to check.
        texts: real texts (the gate's verify data).
        threads: intra-op threads; the check also reruns one layout with a different thread count.
        device: ``cpu`` or ``cuda``: the session every layout is scored on (on CUDA the thread rerun is skipped).

    Returns:
        ``{"passed", "bit_identical", "max_abs_score_diff", "label_changes", "texts", "layouts", "failures"}``.
    """
    from docscore.batch.options import ScoreOptions
    from docscore.batch.scorer import SCORE_PREFIX, Scorer

    rows = _texts_for(texts, long_text, limit)
    table = pa.table({"text": pa.array(rows, pa.string())})
    base = ScoreOptions(variant=variant, threads=threads, long_docs=long_docs, device=device)
    layouts = list(LAYOUTS)
    if device == "cpu":
        layouts.append(("budget_8192_threads_1", {"token_budget": 8192, "threads": 1}))
    outputs = {}
    for name, changes in layouts:
        outputs[name] = Scorer(bundle, base.replace(**changes))(table)
    ref = outputs["alone"]
    score_cols = [c for c in ref.column_names if c == "score" or c.startswith(SCORE_PREFIX)]
    per_layout, worst, label_changes, identical = {}, 0.0, 0, True
    for name, out in outputs.items():
        if name == "alone":
            continue
        same = out.equals(ref)
        diff = max((float(np.nanmax(np.abs(out.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                           - ref.column(c).to_numpy(zero_copy_only=False).astype(np.float64)),
                                    initial=0.0)) for c in score_cols), default=0.0)
        changed = sum(a != b for a, b in zip(out.column("label").to_pylist(), ref.column("label").to_pylist()))
        other = [c for c in ("num_tokens", "num_chunks", "error") if not out.column(c).equals(ref.column(c))]
        per_layout[name] = {"bit_identical": same, "max_abs_score_diff": diff, "label_changes": changed,
                            "other_columns_changed": other}
        identical &= same
        worst = max(worst, diff)
        label_changes += changed
    failures = []
    if not identical:
        if worst > SCORE_TOLERANCE:
            failures.append(f"scores depend on batching: max |Δscore| {worst:.3g} > {SCORE_TOLERANCE} between a text "
                            f"scored alone and in a batch")
        if label_changes:
            failures.append(f"{label_changes} label change(s) between a text scored alone and in a batch")
        for name, r in per_layout.items():
            if r["other_columns_changed"]:
                failures.append(f"{name}: columns {r['other_columns_changed']} changed with batching")
    report = {"passed": not failures, "bit_identical": identical, "max_abs_score_diff": worst,
              "label_changes": label_changes, "texts": len(rows), "layouts": per_layout,
              "tolerance": SCORE_TOLERANCE, "failures": failures}
    log.info("invariance %s: %s", variant, "bit-identical" if identical else
             f"max |Δscore| {worst:.2e}, {label_changes} label changes -> {'pass' if not failures else 'FAIL'}")
    return report
