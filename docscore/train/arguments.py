"""The options of ``docscore train``: one documented dataclass, shared by the CLI and the Python API.

Names follow ``transformers.TrainingArguments`` wherever the concept is the same (``learning_rate``,
``per_device_train_batch_size``, ``save_steps`` ...), so a Hugging Face user reads them at sight; the CLI spells
them with dashes and keeps docscore's earlier short flags (``--epochs``, ``--batch-size``, ``--lr``) as aliases.
Torch-free: the CLI imports it to build ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from docscore.errors import ConfigError

METRICS = ("macro_f1", "accuracy", "loss", "rmse")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
REPORTERS = ("none", "tensorboard", "mlflow")
TRAINING_DIR = "_training"  # under the output: resume checkpoints and logs; readers skip `_*` (pyarrow.dataset)


@dataclass
class TrainingArguments:
    """Everything ``docscore train`` takes; the CLI parses straight into this.

    Data and model:
        train_data: labelled Parquet or CSV file.
        output: checkpoint directory to write (replaced atomically at the end); resume state lives in its
            ``_training/`` folder while the run is going.
        eval_data: separate labelled file for evaluation; if unset, ``val_split`` of the training rows is held out.
        val_split: fraction held out for evaluation when ``eval_data`` is unset (0 disables evaluation).
        text_column / label_column: column names in the data files.
        body: local folder or hub name of the ``AutoModel`` body; ``None`` = embedded all-MiniLM-L6-v2.
        problem_type: ``auto`` (list labels → multi_label, float labels → regression, else single_label) or explicit.
        pooling / dropout / hidden_dim: head options (see :class:`~docscore.spec.HeadConfig`).
        max_length: tokens per text in training; recorded in the checkpoint for export and scoring.
        freeze_body: train the head only.

    Optimisation (as in ``transformers.TrainingArguments``):
        num_train_epochs: passes over the training data (ignored when ``max_steps`` is set).
        max_steps: total optimisation steps; overrides ``num_train_epochs``.
        per_device_train_batch_size / per_device_eval_batch_size: documents per forward pass and process.
        gradient_accumulation_steps: forward passes per optimisation step (global batch = per-device batch ×
            processes × this).
        learning_rate: of the body; head_learning_rate: of the head (a fresh head learns faster than a
            pretrained body). Both follow the schedule.
        lr_scheduler_type: ``linear`` (the default), ``cosine``, ``constant``, ``constant_with_warmup`` ...
        warmup_ratio: share of steps with linear warm-up.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: gradient clipping norm (0 disables).
        seed: seeds Python, NumPy, torch and the data order; same seed + same data → same weights on CPU, also
            across a kill and ``resume_from_checkpoint``.
        bf16: bfloat16 autocast, on CPUs with AVX512-BF16/AMX and on GPUs that have it; fp16: float16 autocast
            with loss scaling, GPUs only. Weights and the checkpoint stay float32.
        gradient_checkpointing: recompute the body's activations in the backward pass (less memory, ~30 % slower).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Evaluation, checkpoints, logging:
        eval_steps: evaluate every N optimisation steps (default: at the end of each epoch).
        metric_for_best_model: what picks the kept model: ``macro_f1`` / ``accuracy`` (higher is better), ``loss``
            or ``rmse`` (lower is better); ``None`` = macro_f1, or rmse for regression.
        early_stopping_patience: stop after this many evaluations without improvement (``None``: never).
        early_stopping_threshold: the least change that counts as an improvement.
        class_weights: ``balanced`` (inverse label frequency; multi-label: negatives/positives per label) or a JSON
            file ``{"label": weight}`` (labels not named weigh 1); ``None`` = unweighted.
        save_steps: keep a resume checkpoint every N steps (default: at each evaluation, else each epoch).
        save_total_limit: resume checkpoints kept (the best one is never deleted before the end).
        resume_from_checkpoint: ``last`` (the newest complete checkpoint under ``OUTPUT/_training``, or a fresh
            start when there is none) or the path of one checkpoint folder.
        logging_steps: log the training loss every N steps.
        report_to: ``none`` (the default: nothing leaves the machine), ``tensorboard`` (events under
            ``OUTPUT/runs``) or ``mlflow`` (needs its package and your tracking URI).
        dataloader_num_workers: worker processes that tokenise batches (0: in the training process).
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
    max_length: int = 128
    freeze_body: bool = False
    num_train_epochs: int = 3
    max_steps: int | None = None
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    device: str = "auto"
    eval_steps: int | None = None
    metric_for_best_model: str | None = None
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    class_weights: str | None = None
    save_steps: int | None = None
    save_total_limit: int = 2
    resume_from_checkpoint: str | None = None
    logging_steps: int = 1
    report_to: str = "none"
    dataloader_num_workers: int = 0

    def validate(self) -> None:
        """Refuse inconsistent options before any file is read or written."""
        if self.metric_for_best_model is not None and self.metric_for_best_model not in METRICS:
            raise ConfigError(f"--metric-for-best-model must be one of {METRICS}, got {self.metric_for_best_model!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.num_train_epochs < 1 or self.per_device_train_batch_size < 1 or self.per_device_eval_batch_size < 1:
            raise ConfigError("--num-train-epochs and the batch sizes must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("--gradient-accumulation-steps must be at least 1")
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"--val-split must be in [0, 1), got {self.val_split}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8, got {self.max_length}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ConfigError(f"--lr-scheduler-type must be one of {SCHEDULERS}, got {self.lr_scheduler_type!r}")
        if self.report_to not in REPORTERS:
            raise ConfigError(f"--report-to must be one of {REPORTERS}, got {self.report_to!r}")
        if self.bf16 and self.fp16:
            raise ConfigError("--bf16 and --fp16 exclude each other: pick one")
        for name in ("eval_steps", "save_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.save_total_limit < 1:
            raise ConfigError(f"--save-total-limit must be at least 1, got {self.save_total_limit}")
        if self.logging_steps < 1:
            raise ConfigError(f"--logging-steps must be at least 1, got {self.logging_steps}")
        if self.eval_steps and self.save_steps and self.save_steps % self.eval_steps:
            raise ConfigError(f"--save-steps ({self.save_steps}) must be a multiple of --eval-steps "
                              f"({self.eval_steps}): the kept best model must be one that was saved")
        if self.resume_from_checkpoint == "":
            raise ConfigError("--resume-from-checkpoint needs `last` or a checkpoint folder")

    @property
    def has_eval(self) -> bool:
        return self.eval_data is not None or self.val_split > 0
