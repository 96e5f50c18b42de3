"""What a classifier's run is judged by: macro-F1, accuracy, per-class precision/recall/F1, the confusion
matrix, RMSE for regression, the per-epoch table and the training curve picture (``training_curve.png``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

from docscore.spec import HeadConfig

log = logging.getLogger(__name__)


def predictions(logits: np.ndarray, problem_type: str) -> np.ndarray:
    """Logits ``(N, L)`` → class ids ``(N,)`` (single-label) or multi-hot booleans ``(N, L)`` (multi-label)."""
    if problem_type == "single_label":
        return logits.argmax(-1)
    return logits > 0


def _one_hot(y: np.ndarray, num_labels: int) -> np.ndarray:
    return np.eye(num_labels, dtype=bool)[y] if y.ndim == 1 else y.astype(bool)


def per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict[str, dict]:
    """Precision, recall, F1 and support of every label; works for class ids (1-D) and multi-hot rows (2-D)."""
    t, p = _one_hot(y_true, len(labels)), _one_hot(y_pred, len(labels))
    out = {}
    for k, label in enumerate(labels):
        tp, fp, fn = int((t[:, k] & p[:, k]).sum()), int((~t[:, k] & p[:, k]).sum()), int((t[:, k] & ~p[:, k]).sum())
        out[label] = {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                      "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0, "support": tp + fn}
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Macro-F1 over labels; works for class ids (1-D) and multi-hot rows (2-D)."""
    rows = per_class(y_true, y_pred, tuple(str(k) for k in range(num_labels)))
    return float(np.mean([r["f1"] for r in rows.values()]))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Rows are true labels, columns predicted labels (single-label); multi-label: a 2×2 matrix per label."""
    if y_true.ndim == 1:
        m = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(m, (y_true, y_pred), 1)
        return {"labels": list(labels), "rows": "true", "columns": "predicted", "matrix": m.tolist()}
    t, p = y_true.astype(bool), y_pred.astype(bool)
    return {"labels": list(labels), "per_label": {
        label: [[int((~t[:, k] & ~p[:, k]).sum()), int((~t[:, k] & p[:, k]).sum())],
                [int((t[:, k] & ~p[:, k]).sum()), int((t[:, k] & p[:, k]).sum())]]
        for k, label in enumerate(labels)}, "rows": "true (0, 1)", "columns": "predicted (0, 1)"}


def scalar_metrics(logits: np.ndarray, targets: np.ndarray, head: HeadConfig) -> dict[str, float]:
    """The metrics logged at every evaluation (scalars only: TensorBoard and ``log_history`` take them)."""
    logits = logits.astype(np.float32)
    if head.problem_type == "regression":
        return {"rmse": float(np.sqrt(np.mean((logits.reshape(targets.shape) - targets) ** 2)))}
    pred = predictions(logits, head.problem_type)
    true = targets if head.problem_type == "single_label" else targets.astype(bool)
    accuracy = (pred == true).all(axis=-1).mean() if true.ndim == 2 else (pred == true).mean()
    return {"accuracy": float(accuracy), "macro_f1": macro_f1(true, pred, head.num_labels)}


def compute_metrics_for(head: HeadConfig) -> Callable:
    """The ``compute_metrics`` the ``Trainer`` calls with an ``EvalPrediction``."""

    def compute(p) -> dict[str, float]:
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return scalar_metrics(np.asarray(logits), np.asarray(p.label_ids), head)

    return compute


def report(logits: np.ndarray, targets: np.ndarray, head: HeadConfig) -> dict:
    """Per-class precision/recall/F1 and the confusion matrix of the kept model on the evaluation rows."""
    if head.problem_type == "regression":
        return {}
    pred = predictions(logits.astype(np.float32), head.problem_type)
    true = targets if head.problem_type == "single_label" else targets.astype(bool)
    return {"per_class": per_class(true, pred, head.labels), "confusion_matrix": confusion_matrix(true, pred, head.labels)}


def epoch_table(log_history: list[dict]) -> list[dict]:
    """One row per epoch from the Trainer's ``log_history`` (which survives a resume): mean training loss of the
    epoch's steps, the last evaluation within the epoch, and the epoch's training seconds."""
    rows: dict[int, dict] = {}
    losses: dict[int, list[float]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        k = max(1, math.ceil(round(entry["epoch"], 6)))
        row = rows.setdefault(k, {"epoch": k, "train_loss": None, "eval_loss": None, "accuracy": None,
                                  "macro_f1": None, "seconds": 0.0})
        if "loss" in entry:
            losses.setdefault(k, []).append(entry["loss"])
        elif "eval_loss" in entry:
            row["eval_loss"] = entry["eval_loss"]
            for name in ("accuracy", "macro_f1", "rmse"):
                if f"eval_{name}" in entry:
                    row[name] = entry[f"eval_{name}"]
        elif "epoch_seconds" in entry:
            row["seconds"] = round(row["seconds"] + entry["epoch_seconds"], 2)
    for k, values in losses.items():
        rows[k]["train_loss"] = float(np.mean(values))
    return [rows[k] for k in sorted(rows)]


def plot_curve(log_history: list[dict], metric: str, path: Path) -> bool:
    """Training loss, evaluation loss and the model-selection metric against steps, as a PNG. False (and a log
    line) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no training_curve.png (pip install matplotlib)")
        return False
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1)
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="eval loss",
                color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, names = ax.get_legend_handles_labels()
    key = f"eval_{metric}"
    if metric != "loss" and any(key in e for e in evals):
        ax2 = ax.twinx()
        ax2.plot([e["step"] for e in evals if key in e], [e[key] for e in evals if key in e], "s--",
                 label=metric, color="tab:green")
        ax2.set_ylabel(metric)
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, loc="best")
    ax.set_title("docscore train")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
