"""p50/p95/p99 latency, PyTorch eager vs every bundle variant. Same as `docscore bench latency`.

    python benchmarks/latency.py --model runs/demo/bundle --checkpoint runs/demo/checkpoint [--quick]
"""
import sys

from docscore.cli import main

raise SystemExit(main(["bench", "latency", *sys.argv[1:]]))
