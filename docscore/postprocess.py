"""Logits → scores, the same for parity checks and for scoring (numpy only)."""

from __future__ import annotations

import numpy as np


def scores_from_logits(logits: np.ndarray, problem_type: str) -> np.ndarray:
    """Per-label scores: softmax for single-label, sigmoid for multi-label, the raw value for regression.

    Args:
        logits: ``(B, num_labels)`` array.
        problem_type: one of :data:`docscore.spec.PROBLEM_TYPES`.
    """
    x = np.asarray(logits, dtype=np.float64)
    if problem_type == "single_label":
        x = x - x.max(axis=-1, keepdims=True)
        e = np.exp(x)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    if problem_type == "multi_label":
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return x.astype(np.float32)


def predicted_index(scores: np.ndarray, problem_type: str) -> np.ndarray:
    """Index of the predicted label per row (argmax; for multi-label the most confident label)."""
    if problem_type == "regression":
        return np.zeros(len(scores), dtype=np.int64)
    return np.asarray(scores).argmax(axis=-1)
