"""Training rows as the ``Trainer`` sees them: Arrow texts + encoded targets, tokenised one batch at a time.

Nothing is tokenised ahead: a training file of millions of rows costs its Arrow bytes and one target per row, and
the sampler, ``skip_first_batches`` on resume and DDP sharding all work on row indices (a map-style dataset).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from docscore.data import LabelledData, label_ids
from docscore.errors import ConfigError
from docscore.spec import HeadConfig


def infer_problem_type(data: LabelledData, requested: str) -> str:
    if requested != "auto":
        return requested
    return {"multi": "multi_label", "numeric": "regression", "single": "single_label"}[data.kind]


def encode_targets(data: LabelledData, head: HeadConfig) -> np.ndarray:
    """Raw labels → training targets: class ids ``(N,)`` int64, multi-hot rows ``(N, L)`` or floats ``(N, 1)``."""
    if head.problem_type == "regression":
        return pc.cast(data.labels, pa.float32()).to_numpy(zero_copy_only=False).reshape(-1, 1)
    ids = label_ids(data, list(head.labels))
    if head.problem_type == "multi_label":
        y = np.zeros((len(data), head.num_labels), dtype=np.float32)
        if data.kind == "multi":
            y[pc.list_parent_indices(data.labels).to_numpy(), ids] = 1.0
        else:  # one label per row, trained with sigmoids
            y[np.arange(len(data)), ids] = 1.0
        return y
    return ids.astype(np.int64)


def split_holdout(data: LabelledData, fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    """A seeded random ``fraction`` of the rows for evaluation; both parts keep the file order."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_eval = max(1, int(round(len(data) * fraction)))
    return data.take(np.sort(order[n_eval:])), data.take(np.sort(order[:n_eval]), f" (held-out {fraction:.0%})")


def class_weights(spec: str, targets: np.ndarray, head: HeadConfig) -> torch.Tensor:
    """Per-label loss weights: ``balanced`` or a JSON file ``{"label": weight}``.

    Single-label: the ``weight`` of the cross-entropy, ``balanced`` = ``N / (L · count)`` (scikit-learn's rule).
    Multi-label: the ``pos_weight`` of each sigmoid, ``balanced`` = negatives / positives of that label.
    """
    if head.problem_type == "regression":
        raise ConfigError("--class-weights applies to classification; this run is a regression")
    if spec == "balanced":
        if head.problem_type == "multi_label":
            pos = targets.sum(axis=0)
            w = (len(targets) - pos) / np.maximum(pos, 1.0)
        else:
            counts = np.bincount(targets, minlength=head.num_labels).astype(np.float64)
            w = len(targets) / (head.num_labels * np.maximum(counts, 1.0))
        return torch.tensor(w, dtype=torch.float32)
    path = Path(spec)
    try:
        given = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--class-weights {spec}: not `balanced` nor a readable JSON file ({e}); "
                          'write {"label": weight, ...}') from e
    if not isinstance(given, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in given.values()):
        raise ConfigError(f"--class-weights {spec}: expected a JSON object of positive numbers per label")
    unknown = sorted(set(map(str, given)) - set(head.labels))
    if unknown:
        raise ConfigError(f"--class-weights {spec}: labels {unknown} are not in the training data "
                          f"(labels: {list(head.labels)})")
    return torch.tensor([float(given.get(label, 1.0)) for label in head.labels], dtype=torch.float32)


class LabelledRows(torch.utils.data.Dataset):
    """Row ``i`` is ``{"text": str, "labels": target}``; the collator tokenises a batch of them."""

    def __init__(self, texts: pa.Array, targets: np.ndarray):
        self.texts = texts
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"text": self.texts[i].as_py(), "labels": self.targets[i]}


@dataclass
class Collator:
    """Tokenise a batch, pad it to its longest row (dynamic padding), stack its targets.

    Args:
        tokenizer: the body's Hugging Face tokenizer (saved into the checkpoint).
        max_length: truncation length.
        input_names: the inputs the model takes (``token_type_ids`` only for bodies that use it).
    """

    tokenizer: object
    max_length: int
    input_names: tuple[str, ...]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([r["text"] for r in rows], truncation=True, max_length=self.max_length,
                             padding="longest", return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}  # (B, T) each
        if "token_type_ids" in self.input_names:
            batch["token_type_ids"] = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
        batch["labels"] = torch.from_numpy(np.stack([r["labels"] for r in rows]))  # (B,) | (B, L) | (B, 1)
        return batch
