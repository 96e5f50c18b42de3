"""Two benchmark JSON results of the same kind side by side, with ratios. Same as `docscore bench compare`.

    python benchmarks/compare.py runs/bench-old/latency.json runs/bench/latency.json
"""
import sys

from docscore.cli import main

raise SystemExit(main(["bench", "compare", *sys.argv[1:]]))
