"""Quick-mode benchmark runs on a tiny bundle: well-formed JSON, table and PNG; PyTorch beside ONNX."""

import json

import pytest

from docscore.cli import main


@pytest.fixture(scope="module")
def bundle(tiny_bundle_factory):
    return tiny_bundle_factory("bert", variants=("fp32", "optimized"))


def test_latency_quick(bundle, tiny_checkpoint_factory, tmp_path, capsys):
    rc = main(["bench", "latency", "--model", str(bundle), "--checkpoint", str(tiny_checkpoint_factory("bert")),
               "--quick", "--batches", "1,3", "--seqs", "8,64", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "latency.json").read_text())
    assert doc["kind"] == "latency" and doc["machine"]["cores"] >= 1 and doc["settings"]["threads"] == 1
    cells = {(r["engine"], r["variant"], r["batch"], r["seq"]) for r in doc["results"]}
    for engine, variant in (("onnx", "fp32"), ("onnx", "optimized"), ("pytorch", "eager")):
        for b in (1, 3):
            for t in (8, 64):
                assert (engine, variant, b, t) in cells
    for r in doc["results"]:
        assert 0 < r["p50"] <= r["p95"] <= r["p99"] and r["n"] >= 5 and r["gflops"] > 0
    md = (tmp_path / "latency.md").read_text()
    assert "| onnx | optimized | cpu | 3 | 64 |" in md and "Machine:" in md
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| pytorch | eager |" in capsys.readouterr().out


def _openvino() -> bool:
    from docscore.runtime import ov

    return ov.available()


def test_throughput_quick(bundle, tiny_checkpoint_factory, tmp_path, capsys):
    from docscore.bench.archive import make_archive

    make_archive(tmp_path / "arch", rows=40, kind="mixed", shards=2)
    rc = main(["bench", "throughput", str(tmp_path / "arch"), "--model", str(bundle), "--checkpoint",
               str(tiny_checkpoint_factory("bert")), "--threads", "1", "--max-length", "16", "--warmup-docs", "8",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert doc["settings"]["max_length"] == 16 and doc["settings"]["bundle_max_length"] == 64
    pipes = {(r["pipeline"], r["variant"]) for r in doc["results"]}
    want = {("pytorch-loop", "eager"), ("model-only", "fp32"), ("score", "fp32"),
            ("model-only", "optimized"), ("score", "optimized")}
    if _openvino():
        want.add(("model-only", "fp32-openvino"))  # the runtime peer: same model.onnx on OpenVINO
    if doc["machine"]["ops_per_cycle_per_core"]["bf16"]:
        want.add(("pytorch-loop", "bf16-autocast"))  # the near-exact PyTorch peer, only with native bf16
    else:
        assert any(s["variant"] == "bf16-autocast" and "native bf16" in s["why"] for s in doc["skipped"])
    assert pipes == want
    for r in doc["results"]:
        assert r["docs"] == 40 and r["docs_per_s"] > 0 and r["peak_rss_mib"] > 50
        assert 0 <= r["pad_fraction"] < 1
        assert r["speedup_vs_pytorch"] > 0
        assert r["tokens"] <= 16 * r["docs"]  # --max-length honoured by every candidate, PyTorch included
        assert r["precision"] == ("bf16" if r["variant"] == "bf16-autocast" else "fp32")
        assert r["peak_share_pct"] is None or r["peak_share_pct"] > 0  # vs the fp32 peak
    torch_row = next(r for r in doc["results"] if r["pipeline"] == "pytorch-loop" and r["variant"] == "eager")
    assert torch_row["speedup_vs_pytorch"] == 1.0
    assert torch_row["tokenize_s"] > 0 and torch_row["model_s"] > 0
    assert torch_row["tokenize_s"] + torch_row["model_s"] <= torch_row["seconds"] * 1.001
    score = next(r for r in doc["results"] if r["pipeline"] == "score" and r["variant"] == "fp32")
    assert "share_of_model_only" in score
    assert any(s["pipeline"] == "optimum-loop" for s in doc["skipped"]) or ("optimum-loop", "fp32") in pipes
    assert doc["choice"]["chosen"] in ("fp32", "optimized")
    out = capsys.readouterr().out
    assert "| pytorch-loop | eager | fp32 | cpu |" in out and "Default variant on cpu" in out
    assert (tmp_path / "out" / "throughput.png").is_file()


def test_throughput_repeats_round_robin_and_reports_each_candidates_median(bundle, tmp_path, capsys):
    from docscore.bench.archive import make_archive

    make_archive(tmp_path / "arch", rows=12, kind="mixed", shards=1)
    rc = main(["bench", "throughput", str(tmp_path / "arch"), "--model", str(bundle), "--variants", "fp32",
               "--threads", "1", "--warmup-docs", "2", "--repeats", "3", "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert doc["settings"]["repeats"] == 3
    for r in doc["results"]:
        rounds = r["rounds_docs_per_s"]
        assert len(rounds) == 3 and r["docs_per_s"] == pytest.approx(sorted(rounds)[1], rel=0.01)  # the median
        assert r["docs"] == 12 and min(rounds) > 0  # every round scores every row (no resume of an earlier round)
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("round 3/3") == len(doc["results"])
    assert main(["bench", "throughput", "--model", str(bundle), "--repeats", "0", "--out", str(tmp_path)]) == 2


def test_throughput_refuses_max_length_above_the_bundle(bundle, tmp_path):
    rc = main(["bench", "throughput", "--model", str(bundle), "--max-length", "65", "--rows", "4",
               "--out", str(tmp_path)])
    assert rc == 2 and not (tmp_path / "throughput.json").exists()


def test_choose_shows_why(bundle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCSCORE_CACHE_DIR", str(tmp_path))
    assert main(["bench", "choose", "--model", str(bundle), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Default variant on cpu" in out and "candidate fp32" in out and "candidate optimized" in out


def test_op_profile_takes_the_share_of_peak_apart(tiny_bundle_factory, tiny_checkpoint_factory, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    if not _openvino():
        pytest.skip("OpenVINO not installed")
    b = tiny_bundle_factory("bert", variants=("fp32", "int8"))
    out = tmp_path / "profile.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "op_profile.py"
    run = subprocess.run([sys.executable, str(script), "--model", str(b), "--checkpoint",
                          str(tiny_checkpoint_factory("bert")), "--variant", "int8", "--variant", "fp32",
                          "--batch", "4", "--seq", "16", "--reps", "2", "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    assert doc["batch"] == 4 and doc["seq"] == 16 and doc["threads"] == 1
    for name, precision in (("int8", "int8"), ("fp32", "fp32")):
        r = doc["variants"][name]
        assert r["precision"] == precision and r["wall_ms"] > 0
        assert any(k.startswith("FullyConnected") and v > 0 for k, v in r["ms_by_type"].items())
        assert r["dense_gflops"] > 0 and r["whole_model_gflops"] > 0
        assert abs(sum(r["ms_by_type"].values()) - r["profiled_ms"]) < 1e-6
    assert "| int8 | int8 (" in run.stdout and "| fp32 | fp32 (" in run.stdout


def test_calibration_sample_is_disjoint_from_the_benchmark_archive(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow.parquet as pq

    from docscore.bench.archive import make_archive, real_documents

    docs = real_documents()
    (bench,) = make_archive(tmp_path / "bench", 4, "long", shards=1)
    out = tmp_path / "calib.parquet"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration_sample.py"
    run = subprocess.run([sys.executable, str(script), "--out", str(out), "--rows", "3", "--skip", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    scored, calib = pq.read_table(bench).column("text").to_pylist(), pq.read_table(out).column("text").to_pylist()
    assert scored == docs[:4] and calib == docs[4:7] and not set(scored) & set(calib)


def test_cuda_plan_puts_pytorch_half_precision_and_compiled_loops_beside_every_variant(bundle, tiny_checkpoint_factory):
    from docscore.bench.throughput import ThroughputOptions, plan_candidates
    from docscore.bundle import load_bundle

    opts = ThroughputOptions(bundle=str(bundle), checkpoint=str(tiny_checkpoint_factory("bert")), device="cuda")
    skipped = []
    pairs, peers = plan_candidates(opts, load_bundle(bundle), skipped)
    assert pairs[:4] == [("pytorch-loop", "eager"), ("pytorch-loop", "fp16"), ("pytorch-loop", "bf16-autocast"),
                         ("pytorch-loop", "fp16-compile")]
    assert {("score", "fp32"), ("model-only", "optimized")} <= set(pairs) and peers == []


def test_a_failing_torch_compile_is_skipped_with_its_reason_not_fatal(bundle, tiny_checkpoint_factory, monkeypatch):
    """On a GPU host torch.compile may not work; the benchmark says so and measures the rest."""
    from docscore.bench import throughput

    def fake(job, python=None):
        if job["variant"] == "fp16-compile":
            raise RuntimeError("benchmark step pytorch-loop fp16-compile failed:\nBackendCompilerFailed: no triton")
        return {"docs": 10, "tokens": 100, "slots": 120, "seconds": 1.0, "peak_rss_mib": 1.0}

    monkeypatch.setattr(throughput, "run_job", fake)
    monkeypatch.setattr(throughput, "machine_info", lambda: {"gpu": "NVIDIA H200", "cores": 2,
                                                             "ops_per_cycle_per_core": {}})
    opts = throughput.ThroughputOptions(bundle=str(bundle), checkpoint=str(tiny_checkpoint_factory("bert")),
                                        device="cuda", rows=8, choice=False)
    doc = throughput.run_throughput(opts)
    rows = {(r["pipeline"], r["variant"]): r for r in doc["results"]}
    assert ("pytorch-loop", "fp16-compile") not in rows
    assert {"pipeline": "pytorch-loop", "variant": "fp16-compile",
            "why": "failed: BackendCompilerFailed: no triton"} in doc["skipped"]
    assert rows[("pytorch-loop", "fp16")]["precision"] == "fp16"
    assert rows[("pytorch-loop", "fp16")]["peak_gflops"] == 989_400.0  # the H200's dense fp16 peak
    assert rows[("score", "fp32")]["peak_gflops"] == 66_900.0

    def broken(job, python=None):
        raise RuntimeError("benchmark step score fp32 failed:\nboom")

    monkeypatch.setattr(throughput, "run_job", broken)
    with pytest.raises(RuntimeError, match="boom"):  # any other failure still ends the run
        throughput.run_throughput(opts)
