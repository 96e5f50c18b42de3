"""Benchmarks: latency (p50/p95/p99 over batch × sequence) and throughput (docs/s, tokens/s, pad fraction, RSS)
for PyTorch eager, every bundle variant and runtime peers, in one run, with machine facts and each row's share of
the nominal peak of its precision (:mod:`docscore.bench.peaks`, :mod:`docscore.runtime.cpu`).

``docscore bench latency|throughput|choose|compare`` and the scripts in ``benchmarks/`` call into this package.
"""
