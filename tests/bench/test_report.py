"""Benchmark bookkeeping: percentiles, peak estimate, comparison, and never reusing a result."""

import numpy as np
import pytest

from docscore.bench import report
from docscore.bench.peaks import fp32_ops_per_cycle as fp32_flops_per_cycle
from docscore.bench.stats import percentiles


def test_percentiles_on_a_known_series():
    series = list(range(1, 101))  # 1..100 ms
    p = percentiles(series)
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert p["n"] == 100 and p["min"] == 1 and p["mean"] == pytest.approx(50.5)
    assert percentiles([7.0])["p99"] == 7.0
    with pytest.raises(ValueError):
        percentiles([])


def test_peak_flops_per_cycle():
    assert fp32_flops_per_cycle(["fma", "avx2", "avx512f"], "GenuineIntel") == 64
    assert fp32_flops_per_cycle(["fma", "avx2", "avx512f"], "AuthenticAMD") == 32  # Zen 4 double-pumps AVX-512
    assert fp32_flops_per_cycle(["fma", "avx2"]) == 32
    assert fp32_flops_per_cycle(["sse4_2"]) == 8


def _lat_doc(p50s):
    doc = report.new_run("latency", {"cpu": "x", "cores": 2, "ghz": 2.0, "simd": []}, {})
    for (variant, b, t), v in p50s.items():
        doc["results"].append({"engine": "onnx", "variant": variant, "device": "cpu", "batch": b, "seq": t,
                               "p50": v, "p95": v, "p99": v})
    return doc


def test_compare_gives_ratios():
    base = _lat_doc({("fp32", 1, 128): 10.0, ("int8", 1, 128): 8.0})
    new = _lat_doc({("fp32", 1, 128): 5.0, ("int8", 1, 128): 8.0, ("optimized", 1, 128): 4.0})
    out = report.compare(base, new)
    assert "| onnx | fp32 | cpu | 1 | 128 | 10.00 | 5.00 | 0.50× |" in out
    assert "| onnx | int8 | cpu | 1 | 128 | 8.00 | 8.00 | 1.00× |" in out
    assert "| onnx | optimized | cpu | 1 | 128 | - | 4.00 | - |" in out
    thr = report.new_run("throughput", {}, {})
    with pytest.raises(ValueError):
        report.compare(base, thr)


def test_every_run_is_new(tmp_path):
    a = _lat_doc({("fp32", 1, 32): 1.0})
    b = _lat_doc({("fp32", 1, 32): 1.0})
    assert a["run_id"] != b["run_id"]
    report.write_outputs(a, tmp_path)
    first = (tmp_path / "latency.json").read_text()
    report.write_outputs(b, tmp_path)
    assert (tmp_path / "latency.json").read_text() != first
    assert b["run_id"] in (tmp_path / "latency.json").read_text()
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(a["results"][0]["p50"])
