"""Benchmarks: latency (p50/p95/p99 over batch × sequence) and throughput (docs/s, tokens/s, pad fraction, RSS)
for PyTorch eager and every bundle variant, in one run, with machine facts and a roofline line.

``docscore bench latency|throughput|compare`` and the scripts in ``benchmarks/`` call into this package.
"""
