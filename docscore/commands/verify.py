"""``docscore verify --model BUNDLE [--checkpoint CKPT] [--verify-data PATH] [--junit-xml PATH] [--rehash]``: re-check a bundle
before deploying it (CI)."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter, deprecated_option, deprecated_positional, one_of
import json


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="re-check a bundle's manifest, file hashes and, with its checkpoint, spec and parity",
        description="Refuse a bundle whose docscore.json was edited (or carries no digest), names a path outside "
        "the bundle (.., absolute, backslash, a symlink out, a variant file not in its files), or whose files are "
        "missing, truncated or changed since export (exit 4); with --checkpoint, refuse a checkpoint whose labels, "
        "problem type, pooling, max_length or inputs differ from the bundle's (exit 4), and re-run the parity gate "
        "of every variant with the tolerances recorded in the manifest (exit 3 on failure).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", "-m", dest="bundle", default=None, metavar="BUNDLE",
                   help="required: bundle directory from `docscore export-onnx`, local or a URI (s3://...: copied "
                   "to a local cache and checked there)")
    deprecated_positional(p, "bundle", "--model", "BUNDLE")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3-compatible endpoint for an s3:// BUNDLE; default: AWS_ENDPOINT_URL, else AWS")
    p.add_argument("--checkpoint", default=None, help="the checkpoint the bundle was exported from")
    p.add_argument("--verify-data", dest="data", default=None,
                   help="Parquet/CSV texts for the parity re-check (default: the gate texts the bundle keeps, "
                   "gate_texts.json: the same gate as at export)")
    deprecated_option(p, "--data", "data", "--verify-data")
    p.add_argument("--text-column", default="text", help="text column of --verify-data")
    p.add_argument("--verify-rows", type=int, default=300, help="at most this many texts in the re-check")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the ONNX Runtime variants are re-judged: cuda re-runs parity and invariance of fp32, "
                   "optimized and fp16 on the GPU (TF32 off), as `score --device cuda` runs them; OpenVINO variants "
                   "stay on the CPU; fails in one line if the CUDA provider does not start")
    p.add_argument("--junit-xml", default=None, metavar="PATH",
                   help="also write a JUnit XML report (one test case per variant and check), pass or fail")
    p.add_argument("--rehash", action="store_true",
                   help="accept docscore.json as it is now (an old bundle without a digest, or an edit you made "
                   "on purpose): reseal it with a new digest, if every other check passes")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    return p


def run(args) -> int:
    from docscore import storage
    from docscore.bundle import fetch_bundle
    from docscore.errors import ConfigError, DocscoreError
    from docscore.export import verify_bundle

    args.bundle = one_of(args, "bundle", "--model", "BUNDLE", "verify")
    try:
        bundle = args.bundle
        if storage.has_scheme(bundle) and not storage.resolve(bundle, args.s3_endpoint).is_local:
            if args.rehash:
                raise ConfigError("--rehash edits docscore.json in place: run it on a local copy of the bundle")
            bundle = fetch_bundle(bundle, args.s3_endpoint, refresh=True)  # checked below, file by file
        report = verify_bundle(bundle, args.checkpoint, args.data, text_column=args.text_column,
                               verify_rows=args.verify_rows, threads=args.threads, rehash=args.rehash,
                               device=args.device)
    except DocscoreError as e:
        report = getattr(e, "report", None)
        if args.junit_xml:
            _junit(args.junit_xml, report or {"bundle": args.bundle, "checks": {}, "variants": {}}, str(e))
        if args.json and report:
            print(json.dumps(report, indent=2))
        raise
    if args.junit_xml:
        _junit(args.junit_xml, report, None)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print(report, args)
    return 0


def _junit(path: str, report: dict, error: str | None) -> None:
    from docscore.export.junit import write_junit_xml

    if not report.get("checks") and error:  # nothing could be read: one failing case says why
        report = {**report, "checks": {"manifest": {"status": "failed", "message": error, "seconds": 0.0}}}
    write_junit_xml(report, path, error)


def _print(report: dict, args) -> None:
    print(f"bundle {report['bundle']}: manifest digest ok, {report['files_checked']} files, hashes ok"
          + (" (manifest resealed)" if report.get("resealed") else ""))
    if "checkpoint_spec" in report["checks"]:
        print(f"  checkpoint spec ok: {report['checks']['checkpoint_spec']['message']}")
    for name, v in report["variants"].items():
        if v.get("rechecked"):
            from docscore.export.parity import summarize

            print(f"  {name:<10} parity ok: {summarize(v['parity'])}")
            inv = v.get("checks", {}).get("invariance", {})
            if inv.get("status") in ("passed", "skipped"):
                print(f"  {'':<10} invariance {inv['status']}: {inv.get('message', '')}")
        else:
            status = "verified at export" if v["verified_at_export"] else "NOT verified"
            print(f"  {name:<10} {status}" + (f"; {v['note']}" if v.get("note") else ""))
    if not args.checkpoint:
        print("parity not re-run (pass --checkpoint to re-run it)")
    if args.junit_xml:
        print(f"JUnit XML report: {args.junit_xml}")
