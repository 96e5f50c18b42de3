"""The real all-MiniLM-L6-v2 body, exported with --optimize --quantize int8, through the default gate (slow)."""

from __future__ import annotations

import json

import pytest

from docscore.bundle import load_bundle
from docscore.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_checkpoint(tmp_path_factory, minilm_dir, hf_tokenizer):
    """MiniLM body + a head fitted on the training samples' pooled embeddings (body frozen, a few seconds).

    A random head on a real body gives near-tied logits, which no int8 model can be fairly judged on; a fitted head
    has the margins of a trained classifier.
    """
    import pyarrow.csv as pcsv
    import torch

    from tinymodels import SAMPLES
    from docscore.checkpoint import save_checkpoint
    from docscore.model import DocClassifier, mean_pool
    from docscore.spec import HeadConfig, ModelSpec

    torch.manual_seed(0)
    table = pcsv.read_csv(SAMPLES / "train.csv", parse_options=pcsv.ParseOptions(newlines_in_values=True))
    texts, labels = table.column("text").to_pylist(), table.column("label").to_pylist()
    names = tuple(sorted(set(labels)))
    head = HeadConfig(labels=names, pooling="mean")
    model = DocClassifier.from_body(minilm_dir, head).eval()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = hf_tokenizer(texts[i:i + 32], truncation=True, max_length=128, padding=True, return_tensors="pt")
            hidden = model.body(**{k: enc[k] for k in model.input_names}).last_hidden_state
            feats.append(mean_pool(hidden, enc["attention_mask"]))
    x, y = torch.cat(feats), torch.tensor([names.index(v) for v in labels])
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(x), y).backward()
        opt.step()
    out = tmp_path_factory.mktemp("minilm") / "checkpoint"
    save_checkpoint(model, hf_tokenizer, out, ModelSpec(head, 128, model.input_names, model.body.config.model_type))
    # as `docscore train` does: the gate's texts travel with the model (the samples' eval texts)
    from docscore import gate_texts
    from docscore.data import read_table

    gate_texts.write(out, read_table(SAMPLES / "eval.csv").column("text").to_pylist(), "samples/eval.csv")
    return out


def _native_bf16() -> bool:
    from docscore.runtime import ov

    return ov.native_bf16()


# every CPU variant docscore ships on this host: bf16 only where the CPU computes bf16 natively
CPU_VARIANTS = ("fp32", "optimized", "int8") + (("bf16",) if _native_bf16() else ())


@pytest.fixture(scope="module")
def minilm_bundle(minilm_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm-bundle") / "bundle"
    bf16 = ["--bf16"] if "bf16" in CPU_VARIANTS else []
    rc = main(["export-onnx", str(minilm_checkpoint), "-o", str(out), "--optimize", "--quantize", "int8", *bf16])
    assert rc == 0
    return out


def test_minilm_exports_optimized_and_int8_through_the_gate(minilm_bundle, minilm_checkpoint):
    out = minilm_bundle
    bundle = load_bundle(out)
    v = bundle.variants
    assert all(v[name]["verified"] for name in CPU_VARIANTS)
    assert v["fp32"]["parity"]["data"]["max_abs_logit_diff"] < 1e-5  # README: ~1e-6 on MiniLM (gate: 1e-4)
    # The legacy + eager graph is the one the ORT optimizer fuses fully.
    assert v["optimized"]["fusions"]["Attention"] == 6 and v["optimized"]["fusions"]["EmbedLayerNormalization"] == 1
    assert v["int8"]["parity"]["data"]["label_agreement"] >= 0.99
    assert v["int8"]["size_bytes"] < v["fp32"]["size_bytes"] / 3
    assert v["int8"]["quantization"]["mode"] == "static" and v["int8"]["invariance"]["bit_identical"]
    if "bf16" in CPU_VARIANTS:  # near-exact: the same graph at bf16 precision
        assert v["bf16"]["parity"]["data"]["label_agreement"] == 1.0 and v["bf16"]["invariance"]["bit_identical"]
        assert v["bf16"]["parity"]["data"]["max_prob_diff"] < 1e-2
    for name in CPU_VARIANTS:
        assert v[name]["invariance"]["passed"], v[name]["invariance"]["failures"]
        assert v[name]["speed"]["seqs_per_s"] > 0
    fastest = max(CPU_VARIANTS, key=lambda n: v[n]["speed"]["seqs_per_s"])
    from docscore.runtime.choose import choose_variant

    assert choose_variant(bundle) == fastest  # chosen by the speeds measured at export on this CPU
    assert json.loads((out / "tokenizer.json").read_text())["padding"] is None  # MiniLM's fixed 128 must not leak
    assert main(["verify", "--model", str(out), "--checkpoint", str(minilm_checkpoint)]) == 0


def test_minilm_scores_are_bit_identical_however_scored(minilm_bundle, tmp_path):
    """The contract on real weights, for every CPU variant: alone, two budgets, small windows, Ray (2 workers) and a
    run killed mid-way then resumed give the same values (the resumed files the same bytes)."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from docscore.batch import ScoreOptions, score_files
    from tinymodels import ROOT, SAMPLES

    texts = pcsv.read_csv(SAMPLES / "eval.csv", parse_options=pcsv.ParseOptions(newlines_in_values=True)).column("text")
    texts = texts.to_pylist()[:60]
    texts += [" ".join(texts[i:i + 12]) for i in range(0, 60, 12)]  # a few past max_length
    archive = tmp_path / "archive"
    archive.mkdir()
    pq.write_table(pa.table({"doc_id": list(range(len(texts))), "text": texts}), archive / "a.parquet")
    base = dict(id_column="doc_id", threads=1, checkpoint_rows=20)

    def values(out):
        return pq.read_table(out / "a.parquet")

    layouts = {"alone": {"max_batch_rows": 1}, "budget_256": {"token_budget": 256, "sort_window": 5},
               "budget_8192": {"token_budget": 8192}}
    refs = {}
    for variant in CPU_VARIANTS:
        ref = tmp_path / f"{variant}-ref"
        score_files([archive], minilm_bundle, ref, ScoreOptions(variant=variant, **base))
        refs[variant] = ref
        for name, changes in layouts.items():
            out = tmp_path / f"{variant}-{name}"
            score_files([archive], minilm_bundle, out, ScoreOptions(variant=variant, **{**base, **changes}))
            assert values(out).equals(values(ref)), (variant, name)
        cmd = [sys.executable, "-m", "docscore", "score", str(archive), "-m", str(minilm_bundle), "-o",
               str(tmp_path / f"{variant}-killed"), "--id-column", "doc_id", "--threads", "1", "--checkpoint-rows",
               "20", "--variant", variant, "--no-progress"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        killed = subprocess.run(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": "part_committed:2"},
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
        resumed = (tmp_path / f"{variant}-killed" / "a.parquet").read_bytes()
        assert resumed == (ref / "a.parquet").read_bytes(), variant
    fp32, int8 = values(refs["fp32"]), values(refs["int8"])
    agree = sum(a == b for a, b in zip(fp32.column("label").to_pylist(), int8.column("label").to_pylist()))
    assert agree >= 0.99 * len(texts)  # the README's 99 % label agreement, on texts the gate never saw

    pytest.importorskip("ray")
    from docscore.batch.ray import RayOptions, ray_connection, score_files_ray

    with ray_connection(RayOptions(num_cpus=2, tmp_dir=tempfile.mkdtemp(prefix="dsray-"))):
        for variant, ref in refs.items():
            out = tmp_path / f"{variant}-ray"
            score_files_ray([archive], minilm_bundle, out, ScoreOptions(variant=variant, **base), workers=2)
            assert values(out).equals(values(ref)), variant
