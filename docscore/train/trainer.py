"""docscore on ``transformers.Trainer``: the loss and the two learning rates, and the mapping of
:class:`~docscore.train.arguments.TrainingArguments` onto Hugging Face's ``TrainingArguments``.

``DocClassifier.forward`` returns logits; the loss (with class weights) is this trainer's ``compute_loss``, so the
model the exporter traces stays exactly the one that was trained.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers import TrainingArguments as HFTrainingArguments

from docscore.spec import HeadConfig
from docscore.train.arguments import TrainingArguments

log = logging.getLogger(__name__)


def loss_for(head: HeadConfig, weights: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy (single-label, ``weights`` per class), BCE with logits (multi-label, ``weights`` as
    ``pos_weight``) or MSE (regression)."""
    if head.problem_type == "single_label":
        return nn.CrossEntropyLoss(weight=weights)
    if head.problem_type == "multi_label":
        return nn.BCEWithLogitsLoss(pos_weight=weights)
    return nn.MSELoss()


class DocscoreTrainer(Trainer):
    """``Trainer`` with docscore's loss (``compute_loss``) and optimizer: AdamW with the body at
    ``learning_rate`` and the head at ``head_learning_rate``, no weight decay on biases and norms.

    Args:
        loss_fn: from :func:`loss_for`; moved to the training device.
        head_learning_rate: the head's learning rate (the schedule scales both groups alike).
    """

    def __init__(self, *args, loss_fn: nn.Module, head_learning_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn.to(self.args.device)
        self.head_learning_rate = head_learning_rate

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        features = {k: v for k, v in inputs.items() if k != "labels"}
        logits = model(**features)  # (B, L)
        loss = self.loss_fn(logits.float(), inputs["labels"])
        return (loss, {"logits": logits}) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups = []
        for prefix, lr in (("head.", self.head_learning_rate), ("body.", self.args.learning_rate)):
            named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
            groups.append({"params": [p for n, p in named if n in decay], "lr": lr,
                           "weight_decay": self.args.weight_decay})
            groups.append({"params": [p for n, p in named if n not in decay], "lr": lr, "weight_decay": 0.0})
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls([g for g in groups if g["params"]], **kwargs)
        return self.optimizer


class ProgressCallback(TrainerCallback):
    """Hands steps and evaluations to the caller's ``progress`` (the CLI renders it); main process only."""

    def __init__(self, progress: Callable[[dict], None]):
        self.progress = progress

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            self.progress({"epoch": state.epoch, "step": state.global_step, "steps": state.max_steps,
                           "loss": logs["loss"]})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            shown = {k.removeprefix("eval_"): v for k, v in metrics.items() if isinstance(v, float)
                     and not k.endswith(("_runtime", "_per_second"))}
            self.progress({"epoch": state.epoch, "step": state.global_step, "metrics": shown})


class EpochClock(TrainerCallback):
    """Records each epoch's training seconds in ``state.log_history``, which checkpoints carry across a resume."""

    def __init__(self):
        self.started = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.started is not None:
            state.log_history.append({"epoch": state.epoch, "step": state.global_step,
                                      "epoch_seconds": round(time.perf_counter() - self.started, 3)})


def disable_telemetry(report_to: str) -> None:
    """Nothing phones home unless asked: no hub telemetry, no MLflow autologging unless ``--report-to mlflow``."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if report_to != "mlflow":
        os.environ["DISABLE_MLFLOW_INTEGRATION"] = "TRUE"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def hf_arguments(args: TrainingArguments, training_dir: Path, *, has_eval: bool, metric: str,
                 use_cpu: bool) -> HFTrainingArguments:
    """docscore's options as Hugging Face ``TrainingArguments``.

    With an evaluation set, checkpoints follow the evaluations (``load_best_model_at_end`` needs the kept model
    to be a saved one): ``--save-steps N`` alone also evaluates every N steps.
    """
    if has_eval:
        steps = args.eval_steps or args.save_steps
        eval_strategy = "steps" if steps else "epoch"
        save_strategy = eval_strategy
        eval_steps, save_steps = steps, (args.save_steps or steps)
    else:
        eval_strategy, eval_steps = "no", None
        save_strategy = "steps" if args.save_steps else "epoch"
        save_steps = args.save_steps
    distributed = world_size() > 1
    return HFTrainingArguments(
        output_dir=str(training_dir),
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        use_cpu=use_cpu,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        save_strategy=save_strategy,
        save_steps=save_steps or 500,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=metric in ("macro_f1", "accuracy") if has_eval else None,
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        report_to=[] if args.report_to == "none" else [args.report_to],
        disable_tqdm=True,  # progress is the CLI's job
        remove_unused_columns=False,  # the collator needs the raw text
        label_names=["labels"],
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=not use_cpu,
        restore_callback_states_from_checkpoint=True,  # early stopping's patience counter survives a resume
        ddp_backend=("gloo" if use_cpu else "nccl") if distributed else None,
        ddp_find_unused_parameters=False,  # unused parameters (an unused pooler) are frozen instead
        log_level="warning",
        log_level_replica="error",
    )
