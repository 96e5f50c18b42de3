"""Fine-tune a body + head on labelled Parquet/CSV data and write a self-contained checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from docscore.data import LabelledData, check_labels_known, label_vocabulary, load_labelled
from docscore.errors import ConfigError, InputDataError
from docscore.spec import HeadConfig, ModelSpec

log = logging.getLogger(__name__)

METRICS = ("macro_f1", "accuracy", "loss")


@dataclass
class TrainingArguments:
    """Everything ``docscore train`` takes; the CLI parses straight into this.

    Args:
        train_data: labelled Parquet or CSV file.
        output: checkpoint directory to write (replaced atomically).
        eval_data: separate labelled file for evaluation; if unset, ``val_split`` of the training rows is held out.
        val_split: fraction held out for evaluation when ``eval_data`` is unset (0 disables evaluation).
        text_column / label_column: column names in the data files.
        body: local folder or hub name of the ``AutoModel`` body; ``None`` = embedded all-MiniLM-L6-v2.
        problem_type: ``auto`` (list labels → multi_label, float labels → regression, else single_label) or explicit.
        pooling / dropout / hidden_dim: head options (see :class:`~docscore.spec.HeadConfig`).
        epochs / batch_size: training loop size.
        lr: learning rate of the body; head_lr: of the head (a fresh head learns faster than a pretrained body).
        max_length: tokens per text in training; recorded in the checkpoint for export and scoring.
        warmup_ratio: share of steps with linear warm-up, then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        seed: seeds Python, NumPy and torch; same seed + same data → same weights on CPU.
        freeze_body: train the head only.
        metric: what picks the kept epoch: ``macro_f1`` / ``accuracy`` (higher is better) or ``loss``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; CUDA trains in mixed precision.
        grad_clip: max gradient norm.
    """

    train_data: str
    output: str
    eval_data: str | None = None
    val_split: float = 0.1
    text_column: str = "text"
    label_column: str = "label"
    body: str | None = None
    problem_type: str = "auto"
    pooling: str = "mean"
    dropout: float = 0.1
    hidden_dim: int | None = None
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-5
    head_lr: float = 1e-3
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    freeze_body: bool = False
    metric: str = "macro_f1"
    device: str = "auto"
    grad_clip: float = 1.0

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {METRICS}, got {self.metric!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1")
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"--val-split must be in [0, 1), got {self.val_split}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8, got {self.max_length}")


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    eval_loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    seconds: float = 0.0


@dataclass
class TrainResult:
    output: Path
    epochs: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0
    best: EpochMetrics | None = None
    majority_baseline: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "epochs": [asdict(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best": asdict(self.best) if self.best else None,
            "majority_baseline_accuracy": self.majority_baseline,
            "train_seconds": round(self.seconds, 2),
        }


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from docscore.errors import DeviceError

        raise DeviceError("--device cuda was requested but torch sees no CUDA device (CPU build or no GPU)")
    return torch.device(device)


def infer_problem_type(data: LabelledData, requested: str) -> str:
    if requested != "auto":
        return requested
    return {"multi": "multi_label", "numeric": "regression", "single": "single_label"}[data.kind]


def encode_targets(data: LabelledData, head: HeadConfig) -> torch.Tensor:
    """Raw labels → training targets: class ids, multi-hot rows, or floats."""
    if head.problem_type == "regression":
        return torch.tensor([[float(v)] for v in data.labels], dtype=torch.float32)
    index = head.label2id
    if head.problem_type == "multi_label":
        y = torch.zeros(len(data), head.num_labels)
        for i, row in enumerate(data.labels):
            for v in row:
                y[i, index[str(v)]] = 1.0
        return y
    return torch.tensor([index[str(v)] for v in data.labels], dtype=torch.long)


def split_holdout(data: LabelledData, fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(data) * fraction)))
    ev, tr = sorted(order[:n_eval]), sorted(order[n_eval:])
    pick = lambda idx, suffix: LabelledData(data.path + suffix, [data.texts[i] for i in idx],  # noqa: E731
                                            [data.labels[i] for i in idx], data.kind)
    return pick(tr, ""), pick(ev, f" (held-out {fraction:.0%})")


def loss_fn(problem_type: str) -> nn.Module:
    return {"single_label": nn.CrossEntropyLoss(), "multi_label": nn.BCEWithLogitsLoss(),
            "regression": nn.MSELoss()}[problem_type]


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Macro-F1 over labels; works for class ids (1-D) and multi-hot rows (2-D)."""
    if y_true.ndim == 1:
        y_true = np.eye(num_labels, dtype=bool)[y_true]
        y_pred = np.eye(num_labels, dtype=bool)[y_pred]
    f1s = []
    for k in range(num_labels):
        t, p = y_true[:, k].astype(bool), y_pred[:, k].astype(bool)
        tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


class Batches:
    """Pre-tokenised texts, padded per batch (dynamic padding), in a seeded order each epoch."""

    def __init__(self, tokenizer, texts: list[str], targets: torch.Tensor, input_names, max_length: int):
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
        self.ids = enc["input_ids"]
        self.types = enc.get("token_type_ids")
        self.targets = targets
        self.input_names = input_names
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.ids)

    def iterate(self, batch_size: int, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator).tolist() if generator is not None else range(len(self))
        order = list(order)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t = max(len(self.ids[i]) for i in idx)
            ids = torch.full((len(idx), t), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), t), dtype=torch.long)
            types = torch.zeros((len(idx), t), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(self.ids[i])
                ids[r, :n] = torch.tensor(self.ids[i])
                mask[r, :n] = 1
                if self.types is not None:
                    types[r, :n] = torch.tensor(self.types[i])
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feed["token_type_ids"] = types
            yield feed, self.targets[idx]


def evaluate(model, batches: Batches, head: HeadConfig, device, batch_size: int) -> dict:
    model.eval()
    crit = loss_fn(head.problem_type)
    losses, preds, trues = [], [], []
    with torch.no_grad():
        for feed, y in batches.iterate(batch_size):
            logits = model(**{k: v.to(device) for k, v in feed.items()}).float()
            y = y.to(device)
            losses.append(crit(logits, y).item() * len(y))
            if head.problem_type == "single_label":
                preds.append(logits.argmax(-1).cpu().numpy())
            elif head.problem_type == "multi_label":
                preds.append((logits > 0).cpu().numpy())
            trues.append(y.cpu().numpy())
    out = {"eval_loss": sum(losses) / len(batches)}
    if head.problem_type != "regression":
        yp, yt = np.concatenate(preds), np.concatenate(trues)
        acc = (yp == yt).all(axis=-1).mean() if yt.ndim == 2 else (yp == yt).mean()
        out["accuracy"] = float(acc)
        out["macro_f1"] = macro_f1(yt.astype(yp.dtype) if yt.ndim == 2 else yt, yp, head.num_labels)
    return out


def _better(metric: str, new: EpochMetrics, old: EpochMetrics | None) -> bool:
    if old is None:
        return True
    if metric == "loss":
        a, b = new.eval_loss if new.eval_loss is not None else new.train_loss, \
            old.eval_loss if old.eval_loss is not None else old.train_loss
        return a < b
    a, b = getattr(new, metric), getattr(old, metric)
    if a is None:  # no eval set or regression: fall back to the latest epoch
        return True
    if a == b and new.eval_loss is not None and old.eval_loss is not None:
        return new.eval_loss < old.eval_loss  # a tie on the metric goes to the lower eval loss
    return a > b


def param_groups(model, args: TrainingArguments) -> list[dict]:
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n or "norm" in n.lower()  # noqa: E731
    groups = []
    for prefix, lr in (("head.", args.head_lr), ("body.", args.lr)):
        if prefix == "body." and args.freeze_body:
            continue
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
        groups.append({"params": [p for n, p in named if not no_decay(n)], "lr": lr, "weight_decay": args.weight_decay})
        groups.append({"params": [p for n, p in named if no_decay(n)], "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def train(args: TrainingArguments, progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Fine-tune and write the checkpoint; all input is validated before any training starts.

    Args:
        args: the options.
        progress: called after every optimisation step with ``{"epoch", "step", "steps", "loss"}`` and after each
            evaluation with ``{"epoch", "metrics"}``; the CLI renders it.
    """
    from transformers import AutoTokenizer

    from docscore.checkpoint import save_checkpoint
    from docscore.model import DocClassifier, embedded_body_path

    args.validate()
    started = time.perf_counter()
    train_data = load_labelled(args.train_data, args.text_column, args.label_column)
    eval_data = load_labelled(args.eval_data, args.text_column, args.label_column) if args.eval_data else None
    problem_type = infer_problem_type(train_data, args.problem_type)
    if problem_type == "regression":
        labels = [args.label_column]
    else:
        labels = label_vocabulary(train_data)
        if eval_data is not None:
            check_labels_known(eval_data, labels, train_data.path, args.label_column)
    if eval_data is None and args.val_split > 0:
        if len(train_data) < 4:
            raise InputDataError("too few rows to hold out a validation split; pass --eval-data or --val-split 0",
                                 path=args.train_data)
        train_data, eval_data = split_holdout(train_data, args.val_split, args.seed)
    head = HeadConfig(labels=tuple(labels), problem_type=problem_type, pooling=args.pooling, dropout=args.dropout,
                      hidden_dim=args.hidden_dim)

    set_seed(args.seed)
    device = resolve_device(args.device)
    body_path = args.body or embedded_body_path()
    model = DocClassifier.from_body(body_path, head)
    tokenizer = AutoTokenizer.from_pretrained(body_path)
    max_length = min(args.max_length, getattr(model.body.config, "max_position_embeddings", args.max_length) or args.max_length)
    if args.freeze_body:
        for p in model.body.parameters():
            p.requires_grad_(False)
    model.to(device)

    train_b = Batches(tokenizer, train_data.texts, encode_targets(train_data, head), model.input_names, max_length)
    eval_b = (Batches(tokenizer, eval_data.texts, encode_targets(eval_data, head), model.input_names, max_length)
              if eval_data is not None else None)
    steps_per_epoch = math.ceil(len(train_b) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = int(total_steps * args.warmup_ratio)
    optimizer = torch.optim.AdamW(param_groups(model, args))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    crit = loss_fn(problem_type)
    gen = torch.Generator().manual_seed(args.seed)

    result = TrainResult(output=Path(args.output))
    if eval_b is not None and problem_type == "single_label":
        counts = np.bincount(eval_b.targets.numpy(), minlength=head.num_labels)
        result.majority_baseline = float(counts.max() / counts.sum())
    best_state, step = None, 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, loss_sum, n_seen = time.perf_counter(), 0.0, 0
        for feed, y in train_b.iterate(args.batch_size, gen):
            feed = {k: v.to(device) for k, v in feed.items()}
            y = y.to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(**feed)
            loss = crit(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            loss_sum += loss.item() * len(y)
            n_seen += len(y)
            if progress:
                progress({"epoch": epoch, "step": step, "steps": total_steps, "loss": loss.item()})
        em = EpochMetrics(epoch=epoch, train_loss=loss_sum / n_seen)
        if eval_b is not None:
            m = evaluate(model, eval_b, head, device, args.batch_size * 2)
            em.eval_loss, em.accuracy, em.macro_f1 = m["eval_loss"], m.get("accuracy"), m.get("macro_f1")
        em.seconds = round(time.perf_counter() - t0, 2)
        result.epochs.append(em)
        log.info("epoch %d: %s", epoch, asdict(em))
        if progress:
            progress({"epoch": epoch, "metrics": asdict(em)})
        if _better(args.metric, em, result.best):
            result.best, result.best_epoch = em, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})

    model.load_state_dict(best_state)
    model.to("cpu").eval()
    result.seconds = time.perf_counter() - started
    spec = ModelSpec(head=head, max_length=max_length, input_names=model.input_names,
                     body_type=model.body.config.model_type)
    metrics = result.to_dict()
    import transformers

    training_meta = {
        "arguments": asdict(args),
        "body": str(body_path),
        "metrics": metrics,
        "rows": {"train": len(train_b), "eval": len(eval_b) if eval_b else 0},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "device": str(device),
    }
    save_checkpoint(model, tokenizer, args.output, spec, training_meta,
                    extra_files={"metrics.json": json.dumps(metrics, indent=2) + "\n"})
    return result
