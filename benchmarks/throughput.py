"""docs/s, tokens/s, pad fraction and peak RSS: `score`, model-only and the plain PyTorch loop, one run.
Same as `docscore bench throughput`.

    python benchmarks/throughput.py --model runs/demo/bundle --checkpoint runs/demo/checkpoint [--quick]
"""
import sys

from docscore.cli import main

raise SystemExit(main(["bench", "throughput", *sys.argv[1:]]))
