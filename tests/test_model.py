"""The body + head module: every architecture, pooling and problem type; the pooler warning."""

import logging

import pytest
import torch

from tinymodels import ARCHITECTURES, build_tiny_model, tiny_body_config
from docscore.errors import ConfigError
from docscore.model import DocClassifier, mean_pool
from docscore.spec import HeadConfig

TEXTS = ["The parcel never arrived.", "I was charged twice for my plan this month, please refund it."]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_every_architecture(arch, hf_tokenizer):
    model = build_tiny_model(arch)
    enc = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
    feed = {k: enc[k] for k in model.input_names}
    with torch.no_grad():
        logits = model(**feed)
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    if arch == "distilbert":
        assert "token_type_ids" not in model.input_names
    if arch in ("bert", "electra"):
        assert model.input_names[-1] == "token_type_ids"


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
@pytest.mark.parametrize("problem_type", ["single_label", "multi_label", "regression"])
def test_pooling_and_problem_types(pooling, problem_type, hf_tokenizer):
    labels = ("value",) if problem_type == "regression" else ("a", "b", "c", "d")
    model = build_tiny_model("bert", pooling, problem_type, labels, hidden_dim=16 if pooling == "cls" else None)
    model.eval()
    enc = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc)
        # by hand: the body's hidden states, pooled as named (mask-aware mean over real tokens only, the first
        # token, or the body's pooler), then [linear -> GELU] -> linear; dropout is off in eval mode
        hidden = model.body(**{k: enc[k] for k in model.input_names}).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"]
        if pooling == "mean":
            pooled = torch.stack([hidden[b, mask[b].bool()].mean(0) for b in range(len(TEXTS))])
        elif pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = model.body.pooler.activation(model.body.pooler.dense(hidden[:, 0]))
        if pooling == "cls":  # built with a hidden layer
            first = model.head.hidden[0]
            pooled = torch.nn.functional.gelu(pooled @ first.weight.T + first.bias)
        expected = pooled @ model.head.classifier.weight.T + model.head.classifier.bias  # (B, L)
    assert logits.shape == (2, len(labels))
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-5)  # fp32, summation order only
    assert not torch.allclose(logits[0], logits[1])  # the two texts differ, so the check above can fail


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_padding_does_not_change_logits(hf_tokenizer):
    model = build_tiny_model("bert", "mean")
    alone = hf_tokenizer([TEXTS[0]], return_tensors="pt")
    padded = hf_tokenizer([TEXTS[0]], padding="max_length", max_length=40, return_tensors="pt")
    with torch.no_grad():
        a, b = model(**alone), model(**padded)
    assert torch.allclose(a, b, atol=1e-5)


def test_pooler_refused_for_body_without_pooler():
    from transformers import AutoModel

    body = AutoModel.from_config(tiny_body_config("distilbert"))
    with pytest.raises(ConfigError, match="pooler"):
        DocClassifier(body, HeadConfig(labels=("a", "b"), pooling="pooler"))


def test_warns_when_pooler_weights_missing(tmp_path, caplog):
    from transformers import AutoModel

    body = AutoModel.from_config(tiny_body_config("bert"))
    state = {k: v for k, v in body.state_dict().items() if not k.startswith("pooler")}
    body.save_pretrained(tmp_path, state_dict=state)
    with caplog.at_level(logging.WARNING, logger="docscore.model"):
        DocClassifier.from_body(tmp_path, HeadConfig(labels=("a", "b"), pooling="pooler"))
    assert "no trained pooler weights" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="docscore.model"):
        DocClassifier.from_body(tmp_path, HeadConfig(labels=("a", "b"), pooling="mean"))
    assert not [r for r in caplog.records if r.name == "docscore.model"]


def test_head_config_validation():
    with pytest.raises(ConfigError):
        HeadConfig(labels=("a", "a"))
    with pytest.raises(ConfigError):
        HeadConfig(labels=("a", "b"), pooling="max")
    with pytest.raises(ConfigError):
        HeadConfig(labels=("only",), problem_type="single_label")
    h = HeadConfig(labels=("x", "y"), problem_type="multi_label")
    assert HeadConfig.from_dict(h.to_dict()) == h
    assert h.id2label == {0: "x", 1: "y"}
