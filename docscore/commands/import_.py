"""``docscore import SRC --output CKPT``: a seed-style state dict or a SetFit model → a docscore checkpoint."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="turn a state dict or a SetFit model into a checkpoint export-onnx takes",
        description="Write a docscore checkpoint (config.json, model.safetensors, tokenizer) from a model trained "
        "elsewhere: a state dict of a seed-style module (an AutoModel body + a linear head; .pt/.bin read with "
        "torch.load(weights_only=True), or .safetensors) with --body, or a SetFit model folder (its "
        "LogisticRegression head read from model_head.pkl by an allowlist reader that runs no code). A state dict "
        "that does not fit exactly is refused, naming the keys; nothing is written (exit 2). A Hugging Face "
        "*ForSequenceClassification folder needs no import: pass it to export-onnx.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("source", metavar="SRC", help="state dict file (.pt, .pth, .bin, .safetensors) or SetFit folder")
    p.add_argument("--output", "-o", required=True,
                   help="checkpoint directory to write (an existing docscore checkpoint there is replaced)")
    p.add_argument("--body", default=None,
                   help="state dicts: the folder (or hub name) the body was loaded from; only its config.json and "
                   "tokenizer are read")
    p.add_argument("--labels", default=None,
                   help="label names in logit order: A,B,C or a file with one label per line (required for a "
                   "state dict; overrides a SetFit model's own)")
    p.add_argument("--pooling", default="pooler", choices=["pooler", "cls", "mean"],
                   help="state dicts: what the head reads (the seed's pooler_output, the first token, or the "
                   "mask-aware mean)")
    p.add_argument("--problem-type", default="single_label", choices=["single_label", "multi_label", "regression"],
                   help="state dicts: softmax (the seed), sigmoid per label, or raw outputs")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per document (default: SetFit's max_seq_length, else the tokenizer's "
                   "model_max_length within the body's positions)")
    return p


def run(args) -> int:
    from docscore.importer import ImportOptions, import_model

    options = ImportOptions(output=args.output, body=args.body, pooling=args.pooling, labels=args.labels,
                            problem_type=args.problem_type, max_length=args.max_length)
    out = import_model(args.source, options)
    from docscore.checkpoint import read_checkpoint_config

    config = read_checkpoint_config(out)
    head = config["spec"]["head"]
    print(f"checkpoint {out}  ({config['origin']['kind']}: {', '.join(head['labels'])}; {head['problem_type']}, "
          f"pooling {head['pooling']}{', normalized' if head.get('normalize') else ''}, max_length "
          f"{config['spec']['max_length']})")
    print(f"next: docscore export-onnx {out} --output BUNDLE")
    return 0
