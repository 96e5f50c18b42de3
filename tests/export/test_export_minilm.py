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
    return out


def test_minilm_exports_optimized_and_int8_through_the_gate(minilm_checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["export-onnx", str(minilm_checkpoint), "-o", str(out), "--optimize", "--quantize", "int8"])
    assert rc == 0, capsys.readouterr().err
    bundle = load_bundle(out)
    v = bundle.variants
    assert all(v[name]["verified"] for name in ("fp32", "optimized", "int8"))
    assert v["fp32"]["parity"]["data"]["max_abs_logit_diff"] < 1e-4
    # The legacy + eager graph is the one the ORT optimizer fuses fully.
    assert v["optimized"]["fusions"]["Attention"] == 6 and v["optimized"]["fusions"]["EmbedLayerNormalization"] == 1
    assert v["int8"]["parity"]["data"]["label_agreement"] >= 0.99
    assert v["int8"]["size_bytes"] < v["fp32"]["size_bytes"] / 3
    assert v["int8"]["quantization"]["mode"] == "static" and v["int8"]["invariance"]["bit_identical"]
    for name in ("fp32", "optimized", "int8"):
        assert v[name]["invariance"]["passed"], v[name]["invariance"]["failures"]
        assert v[name]["speed"]["seqs_per_s"] > 0
    fastest = max(("fp32", "optimized", "int8"), key=lambda n: v[n]["speed"]["seqs_per_s"])
    assert bundle.default_variant() == fastest  # chosen by the speeds measured at export on this CPU
    assert json.loads((out / "tokenizer.json").read_text())["padding"] is None  # MiniLM's fixed 128 must not leak
    assert main(["verify", str(out), "--checkpoint", str(minilm_checkpoint)]) == 0
