"""The prepared GPU check (benchmarks/gpu_check.py), rehearsed on the CPU provider with a tiny body of the real
tokenizer: every step runs and its JSON holds what the GPU run will be judged by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=900)


def test_pack_carries_config_and_tokenizer_but_no_weights(tmp_path):
    proc = run("--pack", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in (tmp_path / "body").iterdir()}
    assert {"config.json", "tokenizer.json"} <= names
    assert not any(n.endswith((".safetensors", ".bin", ".onnx")) for n in names)
    assert sum(p.stat().st_size for p in (tmp_path / "body").iterdir()) < 4 * 2**20


def test_without_a_body_it_says_how_to_make_one():
    proc = run("--device", "cpu")
    assert proc.returncode == 2 and "--pack DIR" in proc.stderr


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_step_and_records_the_targets(tmp_path):
    assert run("--pack", str(tmp_path)).returncode == 0
    out = tmp_path / "gpu_check.json"
    proc = run("--body", str(tmp_path / "body"), "--tiny", "--device", "cpu", "--docs", "48", "--gate-rows", "40",
               "--max-length", "64", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert all(s["ok"] for s in doc["steps"].values()) and set(doc["steps"]) >= {
        "environment", "checkpoint", "export", "verify", "score_fp32", "score_optimized", "throughput"}
    assert doc["verify"]["fp32"]["device"] == "cpu" and doc["verify"]["fp32"]["bit_identical"] is True
    assert doc["targets"]["fp32_parity"]["met"] is True and doc["targets"]["fp32_invariance"]["met"] is True
    for v in ("fp32", "optimized"):
        assert doc[f"score_{v}"]["rows"] == 48 and doc[f"score_{v}"]["bit_identical_across_budgets"] is True
    pipes = {(r["pipeline"], r["variant"]) for r in doc["throughput"]["results"]}
    assert {("pytorch-loop", "eager"), ("score", "fp32"), ("model-only", "optimized")} <= pipes
    assert doc["targets"]["score_vs_pytorch"]["met"] in (True, False)  # measured; tiny bodies prove nothing here
