"""``docscore verify BUNDLE [--checkpoint CKPT] [--data PATH]``: re-check a bundle before deploying it (CI)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="re-check a bundle's file hashes and, with its checkpoint, parity",
        description="Refuse a bundle whose files are missing, truncated or changed since export (exit 2); with "
        "--checkpoint, re-run the parity gate of every variant with the tolerances recorded in the manifest "
        "(exit 3 on failure).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory from `docscore export-onnx`")
    p.add_argument("--checkpoint", default=None, help="the checkpoint the bundle was exported from")
    p.add_argument("--data", default=None, help="Parquet/CSV texts for the parity re-check (default: samples)")
    p.add_argument("--text-column", default="text", help="text column of --data")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    return p


def run(args) -> int:
    from docscore.errors import ParityError
    from docscore.export import verify_bundle

    try:
        report = verify_bundle(args.bundle, args.checkpoint, args.data, text_column=args.text_column,
                               threads=args.threads)
    except ParityError as e:
        if args.json and getattr(e, "report", None):
            print(json.dumps(e.report, indent=2))
        raise
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bundle {report['bundle']}: {report['files_checked']} files, hashes ok")
    for name, v in report["variants"].items():
        if v.get("rechecked"):
            from docscore.export.parity import summarize

            print(f"  {name:<10} parity ok: {summarize(v['parity'])}")
        else:
            status = "verified at export" if v["verified_at_export"] else "NOT verified"
            print(f"  {name:<10} {status}" + (f"; {v['note']}" if v.get("note") else ""), file=sys.stdout)
    if not args.checkpoint:
        print("parity not re-run (pass --checkpoint to re-run it)")
    return 0
