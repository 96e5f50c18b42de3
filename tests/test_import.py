"""``docscore import``: a seed-style state dict or a SetFit model → a docscore checkpoint, exported and scored
equal to the source framework's own outputs (the seed's PyTorch module, SetFit's ``predict_proba``); what does not
fit is refused naming the keys (exit 2, nothing written); no pickle runs code."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from docscore.cli import main
from tinymodels import ROOT
from tinysources import LABELS, CustomModelWithHead, sample_texts, save_body, save_setfit

# fp32 against the source framework on the same text: the target (max |Δ probability| <= 1e-5).
PROB_ATOL = 1e-5
FAST = ["--max-length", "64", "--verify-rows", "60", "--threads", "1"]


@pytest.fixture(scope="session")
def body_dir(tmp_path_factory, hf_tokenizer) -> Path:
    """A tiny pretrained BERT body folder (config, weights, tokenizer): the seed's ``pretrained_model_name``."""
    return save_body(tmp_path_factory.mktemp("body") / "bert", "bert", hf_tokenizer)


@pytest.fixture(scope="session")
def seed_model(body_dir):
    """The seed's CustomModelWithHead on the tiny body, in eval mode."""
    torch.manual_seed(1)
    return CustomModelWithHead(str(body_dir), len(LABELS)).eval()


@pytest.fixture(scope="session")
def seed_state_dict(seed_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed.pt"
    torch.save(seed_model.state_dict(), path)  # exactly what the seed's users save
    return path


@pytest.fixture(scope="session")
def setfit_factory(tmp_path_factory, body_dir):
    cache: dict = {}

    def make(**kind) -> Path:
        key = tuple(sorted(kind.items()))
        if key not in cache:
            cache[key] = save_setfit(tmp_path_factory.mktemp("setfit") / "model", body_dir, **kind)
        return cache[key]

    return make


def export_and_score(ckpt: Path, tmp_path: Path, texts: list[str], *extra: str) -> np.ndarray:
    """export-onnx, then the bundle's fp32 scores of ``texts`` through the scorer (one batch, input order)."""
    import pyarrow as pa

    from docscore.batch.options import ScoreOptions
    from docscore.batch.scorer import Scorer
    from docscore.bundle import load_bundle

    bundle = tmp_path / "bundle"
    assert main(["export-onnx", str(ckpt), "--output", str(bundle), *FAST, *extra]) == 0
    b = load_bundle(bundle)
    table = Scorer(b, ScoreOptions(threads=1, variant="fp32"))(pa.table({"text": texts}))
    return np.stack([table.column(f"score_{label}").to_numpy() for label in b.spec.head.labels], axis=1)


# --- seed-style state dicts ---


def test_seed_state_dict_imports_exports_and_scores_as_the_seed_module(seed_model, seed_state_dict, body_dir,
                                                                       tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["import", str(seed_state_dict), "--body", str(body_dir), "--labels", ",".join(LABELS),
                 "--output", str(ckpt)]) == 0
    assert "docscore export-onnx" in capsys.readouterr().out  # the next step
    config = json.loads((ckpt / "config.json").read_text())
    assert config["spec"]["head"]["pooling"] == "pooler" and config["spec"]["head"]["labels"] == list(LABELS)
    assert config["origin"]["kind"] == "state_dict"
    assert config["origin"]["key_prefixes"] == {"body": "base_model.", "head": "classifier."}
    assert not [p for p in ckpt.iterdir() if p.suffix in (".pt", ".bin", ".pkl")]

    texts = sample_texts()
    ours = export_and_score(ckpt, tmp_path, texts)
    enc = seed_model.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.softmax(seed_model(enc["input_ids"], enc["attention_mask"]), dim=-1).numpy()
    assert np.abs(ours - theirs).max() <= PROB_ATOL
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert len(set(theirs.argmax(1))) > 1  # not a constant classifier: agreement means something


def test_renamed_attributes_safetensors_and_a_label_file(tmp_path, hf_tokenizer):
    """``self.encoder`` + ``self.head`` on DistilBERT (no pooler), mean pooling, saved as safetensors."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    from docscore.checkpoint import load_checkpoint
    from docscore.model import mean_pool

    body_dir = save_body(tmp_path / "distil", "distilbert", hf_tokenizer)
    torch.manual_seed(2)
    encoder = AutoModel.from_pretrained(str(body_dir)).eval()
    head = torch.nn.Linear(32, 2)
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             "head.weight": head.weight.detach(), "head.bias": head.bias.detach()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "labels.txt").write_text("negative\npositive\n")
    ckpt = tmp_path / "ckpt"
    assert main(["import", str(tmp_path / "model.safetensors"), "--body", str(body_dir), "--pooling", "mean",
                 "--labels", str(tmp_path / "labels.txt"), "--output", str(ckpt)]) == 0
    model, tok, spec, config = load_checkpoint(ckpt)
    assert spec.head.labels == ("negative", "positive") and config["origin"]["key_prefixes"]["body"] == "encoder."
    enc = tok(sample_texts()[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = head(mean_pool(encoder(**enc).last_hidden_state, enc["attention_mask"]))
        ours = model(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)  # same weights, same maths


def _refused(args: list[str], tmp_path: Path, capsys, *needles: str) -> str:
    out = tmp_path / "out" / "ckpt"
    capsys.readouterr()
    assert main(["import", *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("docscore import: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    return err


def test_state_dicts_that_do_not_fit_are_refused_naming_the_keys(seed_model, body_dir, tmp_path, hf_tokenizer,
                                                                 capsys):
    state = seed_model.state_dict()
    labels = ["--labels", ",".join(LABELS)]

    def saved(name, sd) -> str:
        torch.save(sd, tmp_path / name)
        return str(tmp_path / name)

    missing = {k: v for k, v in state.items() if k != "base_model.encoder.layer.1.output.dense.weight"}
    _refused([saved("missing.pt", missing), "--body", str(body_dir), *labels], tmp_path, capsys,
             "missing 1 body weights: base_model.encoder.layer.1.output.dense.weight", "Nothing was written")
    extra = {**state, "base_model.extra_adapter.weight": torch.zeros(3), "dropout.p": torch.zeros(1)}
    _refused([saved("extra.pt", extra), "--body", str(body_dir), *labels], tmp_path, capsys,
             "unexpected keys: base_model.extra_adapter.weight, dropout.p")
    wider = save_body(tmp_path / "wider", "bert", hf_tokenizer, intermediate_size=96)  # the wrong --body
    _refused([saved("seed.pt", state), "--body", str(wider), *labels], tmp_path, capsys,
             "shape mismatch: base_model.encoder.layer.0.intermediate.dense.bias (64,) vs (96,)")
    _refused([saved("seed.pt", state), "--body", str(body_dir), "--labels", "a,b"], tmp_path, capsys,
             "has 3 outputs but --labels names 2")
    _refused([saved("seed.pt", state), "--body", str(body_dir)], tmp_path, capsys, "--labels")
    _refused([saved("seed.pt", state), *labels], tmp_path, capsys, "--body")
    no_head = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    _refused([saved("nohead.pt", no_head), "--body", str(body_dir), *labels], tmp_path, capsys, "no linear head")


def test_a_pickled_module_is_never_unpickled(seed_model, body_dir, tmp_path, capsys):
    torch.save(seed_model, tmp_path / "whole.pt")  # a whole module: loading it would run pickled code
    _refused([str(tmp_path / "whole.pt"), "--body", str(body_dir), "--labels", ",".join(LABELS)], tmp_path, capsys,
             "weights_only=True", "torch.save(model.state_dict(), PATH)")


def test_what_is_not_importable_is_named(tmp_path, hf_tokenizer, capsys, minilm_dir):
    from tinysources import save_hf_classifier

    hf = save_hf_classifier(tmp_path / "hf", "bert", hf_tokenizer)
    _refused([str(hf)], tmp_path, capsys, "BertForSequenceClassification", "docscore export-onnx")
    _refused([str(minilm_dir)], tmp_path, capsys, "BertModel", "state dict", "SetFit")
    (tmp_path / "notes.txt").write_text("x")
    _refused([str(tmp_path / "notes.txt")], tmp_path, capsys, ".txt file")


def test_output_that_is_not_a_checkpoint_is_never_replaced(seed_state_dict, body_dir, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert main(["import", str(seed_state_dict), "--body", str(body_dir), "--labels", ",".join(LABELS),
                 "--output", str(precious)]) == 2
    assert "not a docscore checkpoint" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"


# --- SetFit ---


@pytest.mark.parametrize("kind", [{}, {"binary": True}, {"multi_label": True}, {"normalize": False, "pooling": "cls"}],
                         ids=["multinomial", "binary", "one-vs-rest-multi-label", "cls-unnormalized"])
def test_setfit_imports_exports_and_scores_as_predict_proba(kind, setfit_factory, tmp_path, capsys):
    from setfit import SetFitModel

    src = setfit_factory(**kind)
    ckpt = tmp_path / "ckpt"
    assert main(["import", str(src), "--output", str(ckpt)]) == 0
    config = json.loads((ckpt / "config.json").read_text())
    head = config["spec"]["head"]
    assert head["normalize"] == kind.get("normalize", True) and head["pooling"] == kind.get("pooling", "mean")
    assert config["spec"]["max_length"] == 64  # the body's max_seq_length
    if kind.get("multi_label"):
        assert head["problem_type"] == "multi_label" and head["labels"] == ["money", "delivery"]
    elif kind.get("binary"):
        assert head["labels"] == ["False", "True"]
    else:
        assert head["labels"] == ["account", "billing", "shipping", "technical"]

    texts = sample_texts()
    ours = export_and_score(ckpt, tmp_path, texts)
    theirs = np.asarray(SetFitModel.from_pretrained(str(src)).predict_proba(texts, as_numpy=True))
    if kind.get("multi_label"):  # one (n, 2) array per label, stacked: the positive column is the label's score
        theirs = theirs[..., 1] if theirs.ndim == 3 else theirs
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= PROB_ATOL
    if not kind.get("multi_label"):
        assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_setfit_head_pickle_runs_no_code(setfit_factory, tmp_path, capsys):
    import shutil

    src = tmp_path / "setfit"
    shutil.copytree(setfit_factory(), src)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    (src / "model_head.pkl").write_bytes(pickle.dumps(Exploit(), protocol=4))
    _refused([str(src)], tmp_path, capsys, "system", "does not unpickle")
    assert not marker.exists()


def test_setfit_differentiable_head_is_refused_by_name(setfit_factory, tmp_path, capsys):
    import shutil

    import joblib
    from setfit.modeling import SetFitHead

    src = tmp_path / "setfit"
    shutil.copytree(setfit_factory(), src)
    joblib.dump(SetFitHead(in_features=32, out_features=4), src / "model_head.pkl")
    _refused([str(src)], tmp_path, capsys, "setfit.modeling.SetFitHead", "does not unpickle")


@pytest.mark.slow
def test_minilm_setfit_matches_predict_proba_on_real_text(minilm_dir, tmp_path):
    """The real MiniLM body + a logistic regression fitted on its normalised embeddings (README: 4.2e-07)."""
    from setfit import SetFitModel

    src = save_setfit(tmp_path / "setfit", minilm_dir, max_seq_length=128)
    assert main(["import", str(src), "--output", str(tmp_path / "ckpt")]) == 0
    texts = sample_texts()
    ours = export_and_score(tmp_path / "ckpt", tmp_path, texts, "--max-length", "128")
    theirs = np.asarray(SetFitModel.from_pretrained(str(src)).predict_proba(texts, as_numpy=True))
    assert np.abs(ours - theirs).max() <= PROB_ATOL
    assert (ours.argmax(1) == theirs.argmax(1)).all() and len(set(theirs.argmax(1))) == 4


# --- the README's "Bring your own model" commands, run as written (paths mapped to this test's files) ---


def test_readme_bring_your_own_model_commands_run(seed_state_dict, body_dir, setfit_factory, hf_tokenizer, tmp_path,
                                                  monkeypatch, capsys):
    from tinysources import save_hf_classifier

    text = (ROOT / "docs" / "train.md").read_text()
    section = text[text.index("## Bring your own model"):]
    section = section.split("\n## ", 1)[0]  # to the next section, or the page's end
    block = section[section.index("```bash") + len("```bash"):]
    commands = [line.split("#")[0].strip() for line in block[:block.index("```")].strip().splitlines()]
    commands = [c for c in commands if c]
    assert len(commands) >= 5
    monkeypatch.chdir(tmp_path)
    Path("runs").mkdir()
    save_hf_classifier(Path("hf-model"), "bert", hf_tokenizer)
    Path("seed.pt").write_bytes(seed_state_dict.read_bytes())
    Path("bert-base-uncased").symlink_to(body_dir)
    Path("setfit-model").symlink_to(setfit_factory())
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "docscore", command
        fast = ["--verify-rows", "40", "--max-length", "64"] if argv[1] == "export-onnx" else []
        assert main([*argv[1:], *fast]) == 0, command
