"""``docscore export-onnx CHECKPOINT --output BUNDLE``: a checkpoint to a parity-gated ONNX bundle."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter
import json
import os
import sys


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="export a checkpoint or a Hugging Face sequence classifier to a verified ONNX bundle",
        description="Export body + head to one ONNX graph with dynamic batch and sequence axes, write the bundle "
        "(model variants, tokenizer.json, docscore.json manifest) and gate every variant on end-to-end parity with "
        "PyTorch. A failed gate exits non-zero (3) and writes nothing.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint directory from `docscore train` or `docscore import`, or a Hugging Face "
                   "*ForSequenceClassification folder (BERT, DistilBERT, RoBERTa/XLM-R, ELECTRA, DeBERTa-v2, "
                   "ModernBERT), exported with its own head and gated against transformers")
    p.add_argument("--output", "-o", required=True,
                   help="bundle directory (an existing bundle there is replaced), or a URI (s3://models/bundle: "
                   "exported to a local temporary directory, then uploaded with docscore.json last; the endpoint "
                   "from AWS_ENDPOINT_URL, credentials from the store's standard chain)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17 legacy, 18 dynamo; both tested)")
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy",
                   help="legacy (TorchScript): the ORT optimizer fuses Attention only on this graph; dynamo: "
                   "torch.export")
    p.add_argument("--attention", choices=["eager", "sdpa"], default="eager",
                   help="the body's attention implementation while exporting")
    p.add_argument("--optimize", action="store_true", help="add the ONNX Runtime transformer-fused variant")
    p.add_argument("--quantize", choices=["int8", "int8-dynamic"], action="append", default=None,
                   help="repeatable. int8: static int8 (NNCF, calibrated on the verify texts, run by OpenVINO; batch-invariant). "
                   "int8-dynamic: ONNX Runtime dynamic int8, batch-dependent, so refused by the invariance "
                   "check unless --allow-batch-dependent")
    p.add_argument("--bf16", action="store_true",
                   help="add the bf16 variant: model.onnx run by OpenVINO at bf16 precision (CPUs with "
                   "AVX512_BF16 or AMX)")
    p.add_argument("--allow-batch-dependent", action="store_true",
                   help="write a variant that fails the invariance check anyway, marked batch_dependent (score "
                   "warns and never picks it by default)")
    p.add_argument("--fp16", action="store_true",
                   help="add an fp16 variant for CUDA (verified only where CUDA is available)")
    p.add_argument("--verify-data", default=None,
                   help="Parquet/CSV with texts for the parity gate (default: the evaluation sample the "
                   "checkpoint carries, gate_texts.json; a model without one uses built-in texts, with a "
                   "warning). The texts used are kept in the bundle for verify")
    p.add_argument("--calibration-data", default=None,
                   help="Parquet/CSV with texts that calibrate --quantize int8 (default: the verify texts); a "
                   "sample of the archives the bundle will score keeps int8 closest to fp32. Recorded with its "
                   "sha256 and row count in the manifest")
    p.add_argument("--calibration-rows", type=int, default=300, help="at most this many calibration texts")
    p.add_argument("--smooth-quant", default="auto", metavar="auto|off|ALPHA",
                   help="SmoothQuant for --quantize int8: auto (default) builds it with SmoothQuant off and at "
                   "NNCF's transformer default (alpha 0.95) and keeps the one closer to fp32 on the calibration "
                   "texts (both errors in the manifest); off; or an alpha in (0, 1]")
    p.add_argument("--text-column", default="text", help="text column of --verify-data")
    p.add_argument("--calibration-text-column", default=None, metavar="COLUMN",
                   help="text column of --calibration-data (default: --text-column)")
    p.add_argument("--verify-rows", type=int, default=300, help="at most this many texts in the gate")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing bundle at --output (refused anyway when that folder holds files its "
                   "manifest does not list: they are not docscore's to delete)")
    p.add_argument("--tolerance", action="append", default=[], metavar="VARIANT.FIELD=VALUE",
                   help="override a gate tolerance, e.g. fp32.atol=1e-5 or int8.min_label_agreement=0.98 "
                   "(repeatable; fields: atol, rtol, max_prob_diff, min_label_agreement, regression_band)")
    p.add_argument("--max-length", type=int, default=None,
                   help="export and verify at this many tokens (default: the checkpoint's)")
    ext = p.add_mutually_exclusive_group()
    ext.add_argument("--external-data", dest="external_data", action="store_true", default=None,
                     help="always store weights in <model>.onnx.data (default: only above 1.8 GiB)")
    ext.add_argument("--no-external-data", dest="external_data", action="store_false",
                     help="never store weights externally (fails above protobuf's 2 GiB)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads in the gate")
    p.add_argument("--json", action="store_true", help="print the manifest's variants section as JSON")
    return p


def _options(args):
    from docscore.export.options import ExportOptions, parse_tolerance_overrides

    return ExportOptions(
        output=args.output, opset=args.opset, exporter=args.exporter, attention=args.attention,
        optimize=args.optimize, quantize=args.quantize, fp16=args.fp16, verify_data=args.verify_data,
        calibration_data=args.calibration_data, calibration_rows=args.calibration_rows,
        smooth_quant=args.smooth_quant,
        text_column=args.text_column, calibration_text_column=args.calibration_text_column,
        verify_rows=args.verify_rows, overwrite=args.overwrite,
        tolerances=parse_tolerance_overrides(args.tolerance), max_length=args.max_length,
        external_data=args.external_data, threads=args.threads, bf16=args.bf16,
        allow_batch_dependent=args.allow_batch_dependent,
    )


def runtime_name(entry: dict) -> str:
    """A variant's runtime as the README names it: ``onnxruntime / f32``, ``openvino / bf16``,
    ``openvino / int8 + bf16`` (static int8 layers, the other ops at the variant's precision)."""
    runtime, precision = entry.get("runtime", "onnxruntime"), entry.get("precision", "f32")
    if entry.get("dtype") == "int8":
        return f"{runtime} / int8 + {precision}" if runtime == "openvino" else f"{runtime} / int8"
    if entry.get("dtype") == "float16":
        return f"{runtime} / fp16"
    return f"{runtime} / {precision}"


def render_variants(variants: dict, out=None) -> None:
    """A small table: one line per variant with its runtime and gate numbers."""
    out = out or sys.stdout
    print(f"{'variant':<13} {'file':<24} {'runtime':<22} {'MiB':>6} {'verified':>8} {'max|Δlogit|':>24} "
          f"{'max|Δscore|':>12} {'labels':>8}  invariance", file=out)
    for name, v in variants.items():
        parity = v.get("parity") or {}
        d = parity.get("data", {})
        worst = max((parity.get(k, {}).get("max_abs_logit_diff", 0.0) for k in ("data", "sweep")), default=0.0)
        size = v.get("size_bytes", 0) / (1 << 20)
        tol = parity.get("tolerance") or {}
        # int8 logits are judged on labels only: a number next to "verified" would read as a passed bound
        gated = not parity or tol.get("atol") is not None  # atol None: logits are not compared
        logit = "-" if not parity else f"{worst:.2e}" + ("" if gated else " (not gated)")
        score = f"{d.get('max_prob_diff', 0.0):.2e}" if parity else "-"
        labels = f"{d.get('label_agreement', 0.0):.2%}" if parity else "-"
        inv = v.get("invariance") or {}
        if not inv:
            inv_s = "-"
        elif inv.get("bit_identical"):
            inv_s = "bit-identical"
        else:
            inv_s = (f"max|Δscore| {inv.get('max_abs_score_diff', 0.0):.1e}, {inv.get('label_changes', 0)} label "
                     f"changes" + (" (BATCH-DEPENDENT)" if v.get("batch_dependent") else ""))
        runtime = runtime_name(v)
        print(f"{name:<13} {v.get('file', ''):<24} {runtime:<22} {size:>6.1f} {str(bool(v.get('verified'))).lower():>8} "
              f"{logit:>24} {score:>12} {labels:>8}  {inv_s}", file=out)
        if v.get("fusions"):
            print(f"{'':<13} fusions: {', '.join(f'{k}={n}' for k, n in v['fusions'].items())}", file=out)
        if v.get("note"):
            print(f"{'':<13} note: {v['note']}", file=out)


def run(args) -> int:
    import shutil
    import tempfile
    import time

    from docscore import storage
    from docscore.bundle import load_bundle, publish_bundle
    from docscore.export import export_bundle

    uri = args.output
    remote = storage.has_scheme(uri) and not storage.resolve(uri).is_local
    work = tempfile.mkdtemp(prefix="docscore-export-") if remote else None  # the bundle is built here, then uploaded
    if remote:
        bucket = storage.missing_bucket(storage.resolve(uri))  # before minutes of export, not after
        if bucket:
            from docscore.errors import ConfigError

            raise ConfigError(f"cannot write the bundle {storage.resolve(uri).uri}: the bucket {bucket} does not "
                              "exist (docscore never creates buckets)")
        args.output = os.path.join(work, "bundle")
    try:
        options = _options(args)
        t = time.perf_counter()
        print(f"exporting {args.checkpoint} -> {storage.resolve(uri).uri if remote else options.output} "
              f"(exporter={options.exporter}, "
              f"attention={options.attention}, variants={','.join(options.variants)})", file=sys.stderr)
        out = export_bundle(args.checkpoint, options)
        manifest = load_bundle(out).manifest
        if remote:
            out = publish_bundle(out, uri)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(manifest["variants"], indent=2))
        return 0
    e = manifest["export"]
    print(f"bundle {out}  ({time.perf_counter() - t:.1f}s; {e['exporter']} exporter, {e['attention']} attention, "
          f"opset {e['opset']}, inputs {', '.join(manifest['spec']['input_names'])})")
    render_variants(manifest["variants"])
    return 0
