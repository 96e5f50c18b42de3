"""``docscore bench latency|throughput|choose|compare``: PyTorch and every bundle variant side by side, and\nwhy the default variant is the default."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter, deprecated_option
import json
import sys
from pathlib import Path


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def register(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="latency and throughput benchmarks (PyTorch vs every ONNX variant)",
                       description="Benchmarks that put PyTorch eager and every bundle variant side by side, in one "
                       "run. Each run prints the machine and settings and writes JSON, a Markdown table and a PNG.")
    bsub = p.add_subparsers(dest="bench_command", metavar="KIND", required=True)
    fmt = HelpFormatter

    lat = bsub.add_parser("latency", formatter_class=fmt, help="p50/p95/p99 over batch size × sequence length",
                          description="p50/p95/p99 latency of one model call over a batch × sequence grid, for "
                          "PyTorch eager (with --checkpoint) and each bundle variant.")
    lat.add_argument("--model", required=True, help="bundle directory (from docscore export-onnx)")
    lat.add_argument("--checkpoint", help="checkpoint directory: adds PyTorch eager rows")
    lat.add_argument("--variants", help="comma-separated variants (default: all the bundle holds, fp16 only on CUDA)")
    lat.add_argument("--batches", type=_ints, default=None, help="batch sizes, e.g. 1,8,32 (full default: 1,8,32)")
    lat.add_argument("--seqs", type=_ints, default=None, help="sequence lengths, e.g. 32,128,256")
    lat.add_argument("--device", action="append", choices=["cpu", "cuda"], help="repeatable; default cpu")
    lat.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    lat.add_argument("--quick", action="store_true", help="small grid, few repetitions: about a minute on 2 cores")
    lat.add_argument("--output", "-o", dest="out", default="runs/bench", help="directory for latency.json/.md/.png")
    deprecated_option(lat, "--out", "out", "--output")

    thr = bsub.add_parser("throughput", formatter_class=fmt, help="docs/s, tokens/s, pad fraction, peak RSS",
                          description="Throughput on a Parquet archive: the full `score` pipeline and model-only "
                          "inference per variant, and the plain PyTorch loop (input order, batches of 32, full-text "
                          "tokenisation) when --checkpoint is given; each measured in its own process for peak RSS.")
    thr.add_argument("inputs", nargs="*", help="Parquet files/directories; default: a generated archive")
    thr.add_argument("--model", required=True, help="bundle directory")
    thr.add_argument("--checkpoint", help="checkpoint directory: adds the plain PyTorch loop")
    thr.add_argument("--variants", help="comma-separated variants (default: all CPU variants in the bundle)")
    thr.add_argument("--generate", choices=["long", "mixed"], default="long",
                     help="kind of archive to generate from real documentation text when no INPUT is given")
    thr.add_argument("--rows", type=int, default=None, help="rows of the generated archive (full: 1000, quick: 64)")
    thr.add_argument("--max-length", type=int, default=None,
                     help="tokens per document for every candidate, PyTorch included (default: the bundle's; "
                     "above it is refused)")
    thr.add_argument("--repeats", type=int, default=1,
                     help="measure every candidate this many times, round-robin (each time in a fresh process), "
                     "and report each one's median run: on a shared, noisy machine the ratios then come from "
                     "runs spread over the same minutes")
    thr.add_argument("--warmup-docs", type=int, default=None,
                     help="first documents each candidate runs once, untimed (full: 64, quick: 16)")
    thr.add_argument("--optimum-python", default=None,
                     help="python of a venv with optimum[onnxruntime]: adds an Optimum loop (default: this python, "
                     "skipped when it cannot import optimum)")
    thr.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    thr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    thr.add_argument("--quick", action="store_true", help="small archive: about a minute on 2 cores")
    thr.add_argument("--output", "-o", dest="out", default="runs/bench",
                     help="directory for throughput.json/.md/.png")
    deprecated_option(thr, "--out", "out", "--output")

    cho = bsub.add_parser("choose", formatter_class=fmt, help="which default variant `score` picks here, and why",
                          description="Every variant of the bundle: why it can or cannot be the default on this "
                          "host, the candidates' measured speeds and the one `score` runs without --variant.")
    cho.add_argument("--model", required=True, help="bundle directory")
    cho.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    cho.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")

    cmp_ = bsub.add_parser("compare", help="two JSON results of the same kind side by side, with ratios")
    cmp_.add_argument("base", help="baseline result JSON")
    cmp_.add_argument("new", help="new result JSON")
    return p


def run(args) -> int:
    from docscore.bench import report

    if args.bench_command == "compare":
        base, new = (json.loads(Path(p).read_text()) for p in (args.base, args.new))
        print(report.compare(base, new))
        return 0

    if args.bench_command == "choose":
        from docscore.runtime.choose import ranking
        from docscore.bundle import load_bundle

        print(report.choice_text(ranking(load_bundle(args.model), args.device, args.threads)))
        return 0

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.bench_command == "latency":
        from docscore.bench.latency import LatencyOptions, run_latency

        kw = {k: v for k, v in dict(batches=args.batches, seqs=args.seqs, devices=args.device,
                                    threads=args.threads).items() if v}
        if args.variants:
            kw["variants"] = args.variants.split(",")
        opts = (LatencyOptions.quick if args.quick else LatencyOptions)(bundle=args.model,
                                                                        checkpoint=args.checkpoint, **kw)
        from docscore.bench.machine import machine_info

        say(f"machine: {report.machine_line(machine_info())}")
        doc = run_latency(opts, progress=say)
    else:
        from docscore.bench.throughput import ThroughputOptions, run_throughput

        opts = ThroughputOptions.from_args(args)
        doc = run_throughput(opts, progress=say)
    paths = report.write_outputs(doc, Path(args.out))
    print(report.markdown_table(doc))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
