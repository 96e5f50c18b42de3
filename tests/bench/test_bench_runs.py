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


def test_throughput_quick(bundle, tiny_checkpoint_factory, tmp_path):
    from docscore.bench.archive import make_archive

    make_archive(tmp_path / "arch", rows=40, kind="mixed", shards=2)
    rc = main(["bench", "throughput", str(tmp_path / "arch"), "--model", str(bundle), "--checkpoint",
               str(tiny_checkpoint_factory("bert")), "--threads", "1", "--out", str(tmp_path / "out")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "throughput.json").read_text())
    pipes = {(r["pipeline"], r["variant"]) for r in doc["results"]}
    assert pipes == {("pytorch-loop", "eager"), ("model-only", "fp32"), ("score", "fp32"),
                     ("model-only", "optimized"), ("score", "optimized")}
    for r in doc["results"]:
        assert r["docs"] == 40 and r["docs_per_s"] > 0 and r["peak_rss_mib"] > 50
        assert 0 <= r["pad_fraction"] < 1
        assert r["speedup_vs_pytorch"] > 0
    score = next(r for r in doc["results"] if r["pipeline"] == "score" and r["variant"] == "fp32")
    assert "share_of_model_only" in score
    assert (tmp_path / "out" / "throughput.png").is_file()
