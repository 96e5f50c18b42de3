"""``train(args)``: validate everything, fine-tune on the ``Trainer``, publish one docscore checkpoint."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from docscore import gate_texts
from docscore.data import check_labels_known, label_vocabulary, load_labelled
from docscore.errors import ConfigError, DeviceError, InputDataError
from docscore.spec import HeadConfig, ModelSpec
from docscore.train.arguments import TRAINING_DIR, TrainingArguments

log = logging.getLogger(__name__)

# arguments a resumed run may change without changing the weights it ends with
RESUME_FREE = ("resume_from_checkpoint", "report_to", "logging_steps", "dataloader_num_workers", "save_total_limit",
               "per_device_eval_batch_size")


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float | None = None
    eval_loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    rmse: float | None = None
    seconds: float = 0.0


@dataclass
class Evaluation:
    """The kept model on the evaluation rows."""

    step: int
    epoch: float
    eval_loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    rmse: float | None = None


@dataclass
class TrainResult:
    output: Path
    epochs: list[EpochMetrics] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_step: int = 0
    best: Evaluation | None = None
    metric: str = "macro_f1"
    majority_baseline: float | None = None
    report: dict = field(default_factory=dict)
    global_step: int = 0
    resumed_from: str | None = None
    early_stopped: bool = False
    seconds: float = 0.0
    is_main_process: bool = True

    def to_dict(self) -> dict:
        return {
            "epochs": [asdict(e) for e in self.epochs],
            "evaluations": self.evaluations,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "best": asdict(self.best) if self.best else None,
            "metric_for_best_model": self.metric,
            "majority_baseline_accuracy": self.majority_baseline,
            **self.report,
            "global_step": self.global_step,
            "early_stopped": self.early_stopped,
            "resumed_from": self.resumed_from,
            "train_seconds": round(self.seconds, 2),
        }


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16: the CPUs on which bf16 autocast is fast, not emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _use_cpu(args: TrainingArguments) -> bool:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was requested but torch sees no CUDA device (CPU build or no GPU)")
    use_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    if use_cpu and args.fp16:
        raise ConfigError("--fp16 trains on GPUs only; on CPU use --bf16 (AVX512-BF16 / AMX CPUs)")
    if use_cpu and args.bf16 and not cpu_has_bf16():
        log.warning("--bf16 on a CPU without AVX512-BF16/AMX: bf16 is emulated there and slower than fp32")
    return use_cpu


def _read_data(args: TrainingArguments):
    """Training and evaluation rows, the problem type and the labels; every input error raised here."""
    from docscore.train.dataset import infer_problem_type, split_holdout

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
    return train_data, eval_data, problem_type, labels


def _check_resume_arguments(training_dir: Path, args: TrainingArguments, resuming: bool) -> None:
    """Keep the run's arguments beside its checkpoints; a resumed run with other arguments is warned about."""
    path = training_dir / "arguments.json"
    now = asdict(args)
    if resuming and path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in now if k not in RESUME_FREE and before.get(k) != now[k])
        if changed:
            log.warning("resuming with other arguments than the run began with (%s): the weights will differ from "
                        "an uninterrupted run", ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed))
    training_dir.mkdir(parents=True, exist_ok=True)
    if not resuming or not path.is_file():
        path.write_text(json.dumps(now, indent=2) + "\n")


def _summarise(result: TrainResult, state, final: dict | None, has_eval: bool) -> None:
    from docscore.train.metrics import epoch_table

    names = {f for f in EpochMetrics.__dataclass_fields__}
    result.epochs = [EpochMetrics(**{k: v for k, v in row.items() if k in names}) for row in epoch_table(state.log_history)]
    result.evaluations = [{k.removeprefix("eval_"): v for k, v in e.items()
                           if k in ("step", "epoch") or (k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")))}
                          for e in state.log_history if "eval_loss" in e]
    result.global_step = state.global_step
    if has_eval and final is not None:
        best_step = state.best_global_step or state.global_step
        best_epoch = next((e["epoch"] for e in result.evaluations if e["step"] == best_step), state.epoch)
        result.best_step, result.best_epoch = best_step, max(1, math.ceil(round(best_epoch, 6)))
        result.best = Evaluation(step=best_step, epoch=round(best_epoch, 4), eval_loss=final.get("eval_loss"),
                                 accuracy=final.get("eval_accuracy"), macro_f1=final.get("eval_macro_f1"),
                                 rmse=final.get("eval_rmse"))
    else:
        result.best_step, result.best_epoch = state.global_step, result.epochs[-1].epoch if result.epochs else 0
        result.best = Evaluation(step=state.global_step, epoch=round(state.epoch or 0, 4))


def train(args: TrainingArguments, progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Fine-tune and write the checkpoint; all input is validated before any training starts.

    Runs as one process or as each process of ``torchrun --nproc-per-node N -m docscore train ...`` (DDP; only
    the main process writes). The steps: validate the options and read the data; build the model and the
    ``transformers.Trainer``; train (resuming where asked); evaluate the kept model once more; publish the
    checkpoint (main process).

    Args:
        args: the options.
        progress: called (main process only) after every logged step with ``{"epoch", "step", "steps", "loss"}``
            and after each evaluation with ``{"epoch", "step", "metrics"}``; the CLI renders it.
    """
    args.validate()
    started = time.perf_counter()
    from docscore.train.checkpoints import resolve_resume
    from docscore.train.trainer import disable_telemetry

    disable_telemetry(args.report_to)
    train_data, eval_data, problem_type, labels = _read_data(args)
    head = HeadConfig(labels=tuple(labels), problem_type=problem_type, pooling=args.pooling, dropout=args.dropout,
                      hidden_dim=args.hidden_dim)
    metric = _metric_for(args, problem_type, has_eval=eval_data is not None)
    output = Path(args.output)
    training_dir = output / TRAINING_DIR
    resume = resolve_resume(args.resume_from_checkpoint, training_dir)

    import transformers

    from docscore.train.dataset import LabelledRows, encode_targets

    transformers.set_seed(args.seed)
    model, tokenizer, max_length, body_path = _build_model(args, head)
    train_ds = LabelledRows(train_data.texts, encode_targets(train_data, head))
    eval_ds = LabelledRows(eval_data.texts, encode_targets(eval_data, head)) if eval_data is not None else None
    trainer = _build_trainer(args, head, model, tokenizer, max_length, train_ds, eval_ds, training_dir, metric,
                             progress)
    main = trainer.is_world_process_zero()
    if main:
        from docscore.train.checkpoints import remove_incomplete

        remove_incomplete(training_dir)
        _check_resume_arguments(training_dir, args, resume is not None)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)

    result = _evaluate_kept_model(trainer, eval_ds, head, metric, output, resume, main)
    state = trainer.state
    result.early_stopped = bool(args.early_stopping_patience) and state.global_step < state.max_steps
    result.seconds = time.perf_counter() - started
    if main:
        gate = eval_data if eval_data is not None else train_data  # the gate's texts travel with the model
        _write_checkpoint(args, trainer, tokenizer, head, max_length, body_path, train_ds, eval_ds, result, metric,
                          gate_texts.to_json(_as_list(gate.texts), gate.path))
    trainer.accelerator.wait_for_everyone()
    return result


def _metric_for(args: TrainingArguments, problem_type: str, has_eval: bool) -> str:
    """The metric that picks the kept model, refused where it cannot judge this problem type."""
    metric = args.metric_for_best_model or ("rmse" if problem_type == "regression" else "macro_f1")
    if problem_type == "regression" and metric in ("macro_f1", "accuracy"):
        raise ConfigError(f"--metric-for-best-model {metric} needs labels; a regression is judged by rmse or loss")
    if problem_type != "regression" and metric == "rmse":
        raise ConfigError("--metric-for-best-model rmse is for regression; use macro_f1, accuracy or loss")
    if args.early_stopping_patience and not has_eval:
        raise ConfigError("--early-stopping-patience needs evaluation rows: pass --eval-data or a --val-split")
    return metric


def _build_model(args: TrainingArguments, head: HeadConfig):
    """The body (``--body`` or the embedded MiniLM) with docscore's head, its tokenizer, the max length it allows,
    and the body's path; frozen and checkpointed parameters set as asked."""
    from transformers import AutoTokenizer

    from docscore.model import DocClassifier, embedded_body_path

    body_path = args.body or embedded_body_path()
    model = DocClassifier.from_body(body_path, head)
    tokenizer = AutoTokenizer.from_pretrained(body_path)
    max_length = min(args.max_length, getattr(model.body.config, "max_position_embeddings", None) or args.max_length)
    for name, p in model.body.named_parameters():
        # a frozen body trains the head only; an unused pooler gets no gradient (and DDP wants none unused)
        if args.freeze_body or (head.pooling != "pooler" and name.startswith("pooler.")):
            p.requires_grad_(False)
    if args.gradient_checkpointing and not args.freeze_body:
        model.body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer, max_length, body_path


def _build_trainer(args: TrainingArguments, head: HeadConfig, model, tokenizer, max_length: int, train_ds, eval_ds,
                   training_dir: Path, metric: str, progress):
    """The ``transformers.Trainer`` with docscore's loss (class weights), two learning rates and callbacks."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    from docscore.train.dataset import Collator, class_weights
    from docscore.train.metrics import compute_metrics_for
    from docscore.train.trainer import DocscoreTrainer, EpochClock, ProgressCallback, hf_arguments, loss_for

    has_eval = eval_ds is not None
    weights = class_weights(args.class_weights, train_ds.targets, head) if args.class_weights else None
    hf_args = hf_arguments(args, training_dir, has_eval=has_eval, metric=metric, use_cpu=_use_cpu(args))
    callbacks = [EpochClock()]
    if progress is not None:
        callbacks.append(ProgressCallback(progress))
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))
    trainer = DocscoreTrainer(
        model=model, args=hf_args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=Collator(tokenizer, max_length, model.input_names),
        compute_metrics=compute_metrics_for(head) if has_eval else None, callbacks=callbacks,
        loss_fn=loss_for(head, weights), head_learning_rate=args.head_learning_rate,
    )
    trainer.remove_callback(PrinterCallback)  # library code logs; the CLI renders `progress`
    return trainer


def _evaluate_kept_model(trainer, eval_ds, head: HeadConfig, metric: str, output: Path, resume, main: bool
                         ) -> TrainResult:
    """The kept (best) model evaluated once more, for the metrics and the per-class report."""
    final, report = None, {}
    if eval_ds is not None:
        from docscore.train.metrics import report as class_report

        out = trainer.predict(eval_ds, metric_key_prefix="eval")
        final = out.metrics
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
        report = class_report(np.asarray(logits), eval_ds.targets, head)
    result = TrainResult(output=output, metric=metric, resumed_from=resume, report=report, is_main_process=main)
    if eval_ds is not None and head.problem_type == "single_label":
        counts = np.bincount(eval_ds.targets, minlength=head.num_labels)
        result.majority_baseline = float(counts.max() / counts.sum())
    _summarise(result, trainer.state, final, eval_ds is not None)
    return result


def _write_checkpoint(args: TrainingArguments, trainer, tokenizer, head: HeadConfig, max_length: int, body_path,
                      train_ds, eval_ds, result: TrainResult, metric: str, gate: str) -> None:
    """The docscore checkpoint (weights, config with labels, tokenizer, metrics, gate texts), published whole."""
    import torch
    import transformers

    from docscore.train.trainer import world_size

    model = trainer.model.to("cpu").eval()
    spec = ModelSpec(head=head, max_length=max_length, input_names=model.input_names,
                     body_type=model.body.config.model_type)
    meta = {
        "arguments": asdict(args),
        "body": str(body_path),
        "metrics": result.to_dict(),
        "rows": {"train": len(train_ds), "eval": len(eval_ds) if eval_ds else 0},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "device": str(trainer.args.device),
        "processes": world_size(),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
    }
    _publish(Path(args.output), model, tokenizer, spec, meta, result, trainer.state.log_history, metric, gate)


def _as_list(texts) -> list:
    return texts.to_pylist() if hasattr(texts, "to_pylist") else list(texts)


def _publish(output: Path, model, tokenizer, spec: ModelSpec, meta: dict, result: TrainResult, log_history: list,
             metric: str, gate_json: str) -> None:
    import shutil

    from docscore.checkpoint import save_checkpoint
    from docscore.train.checkpoints import publish
    from docscore.train.metrics import plot_curve

    runs = output / TRAINING_DIR / "runs"

    def write(target: Path) -> None:
        save_checkpoint(model, tokenizer, target, spec, meta,
                        extra_files={"metrics.json": json.dumps(result.to_dict(), indent=2) + "\n",
                                     gate_texts.GATE_TEXTS_NAME: gate_json})
        plot_curve(log_history, metric, target / "training_curve.png")
        if runs.is_dir():  # TensorBoard events (--report-to tensorboard) stay with the model they describe
            shutil.copytree(runs, target / "runs")

    publish(output, write)
    log.info("checkpoint written to %s", output)
