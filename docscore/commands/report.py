"""``docscore report --output OUT``: label distribution and confidence of a finished scoring run."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter, deprecated_positional, one_of
import json


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="summarise the outputs of docscore score",
        description="Label distribution, confidence histogram and per-row errors over every finished output "
        "in OUT (read lazily with polars), and the last run's decisions: files scored, skipped, changed, deleted "
        "and failed, error rate, schema drift.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--output", "-o", default=None, metavar="OUT",
                   help="required: the --output directory of docscore score (a path or a URI)")
    deprecated_positional(p, "output", "--output", "OUT")
    p.add_argument("--bins", type=int, default=10, help="confidence histogram bins over [0, 1]")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3-compatible endpoint for an s3:// OUT; default: AWS_ENDPOINT_URL, else AWS")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args) -> int:
    from docscore.batch.report import summarize

    args.output = one_of(args, "output", "--output", "OUT", "report")
    rep = summarize(args.output, bins=args.bins, endpoint=args.s3_endpoint)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{rep['rows']:,} rows in {rep['files']} file(s): {rep['scored_rows']:,} scored, "
          f"{rep['error_rows']:,} with a per-row error (shares below are of the scored rows)")
    if rep["labels"]:
        print(f"{'label':<24}{'rows':>10}{'share':>8}{'mean':>8}{'p10':>8}{'median':>8}")
        for r in rep["labels"]:
            print(f"{r['label']:<24}{r['rows']:>10,}{r['share']:>8.1%}{r['mean_score']:>8.3f}"
                  f"{r['p10_score']:>8.3f}{r['median_score']:>8.3f}")
    if rep["confidence"]:
        print("confidence of the predicted label:")
        peak = max(b["rows"] for b in rep["confidence"]) or 1
        for b in rep["confidence"]:
            print(f"  {b['bin_low']:.1f}-{b['bin_high']:.1f} {b['rows']:>8,} {'#' * round(30 * b['rows'] / peak)}")
    for reason, n in rep["errors"].items():
        print(f"error: {reason}: {n:,} row(s)")
    last = rep.get("last_run") or {}
    if last:
        print(f"last run: {len(last['scored'] or [])} scored, {len(last['skipped'] or [])} skipped, "
              f"{len(last['changed'] or [])} changed, {len(last['deleted'] or [])} deleted, "
              f"{len(last['failed'] or [])} failed; row error rate {last['error_rate'] or 0:.2%}; "
              + ("_SUCCESS" if last["success_marker"] else "no _SUCCESS"))
        if last.get("running"):
            print(f"  a run is in progress now: {last['running']}")
        for c in last["changed"] or []:
            print(f"  changed: {c['path']}: {c['action']}")
        for d in last["deleted"] or []:
            print(f"  deleted: {d['input']}: output {d['output']} {d['action']}")
        for f in last["failed"] or []:
            print(f"  failed: {f['path']}: {f['error']}")
        for d in last["schema_drift"] or []:
            print(f"  schema drift: {d['path']}: {d['columns']} (most files: {d['expected']})")
        for p in last["problems"] or []:
            print(f"  NOT OK: {p}")
    return 0
