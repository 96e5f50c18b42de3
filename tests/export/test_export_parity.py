"""The parity gate's judgement, on hand-made logits and fake sessions (no export needed)."""

from __future__ import annotations

import numpy as np
import pytest

from docscore.export.options import DEFAULT_TOLERANCES, Tolerance
from docscore.export.parity import Case, Reference, build_reference, check_variant, compare

FP32 = DEFAULT_TOLERANCES["fp32"]


class FakeEngine:
    """Returns the reference logits of each case, shifted by ``delta``; raises on batch size ``fail_batch``."""

    def __init__(self, reference: Reference, delta: float = 0.0, fail_batch: int | None = None):
        self.by_shape = {id(c.feed["input_ids"]): c.reference for c in reference.cases}
        self.delta, self.fail_batch = delta, fail_batch

    def run(self, feed):
        ids = feed["input_ids"]
        if ids.shape[0] == self.fail_batch:
            raise RuntimeError("Got invalid dimensions for input")
        return self.by_shape[id(ids)] + self.delta


def _reference(problem_type="single_label", n=40, seed=0) -> Reference:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(0, n, 8):
        ref = rng.normal(size=(8, 3)).astype(np.float32) * 3
        cases.append(Case(f"data[{i}]", "data", {"input_ids": np.zeros((8, 5), np.int64)}, ref))
    cases.append(Case("batch1_seq1", "sweep", {"input_ids": np.zeros((1, 1), np.int64)},
                      rng.normal(size=(1, 3)).astype(np.float32)))
    return Reference(cases, problem_type, {"texts": n, "equal": n, "agreement": 1.0, "mismatch_examples": []})


def test_compare_reports_abs_rel_prob_and_agreement():
    ref = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]], dtype=np.float32)
    out = ref + np.array([[0.0, 0.0, 0.1], [0.6, 0.0, 0.0]], dtype=np.float32)  # row 2: label 1 -> label 0
    m = compare(ref, out, "single_label", FP32)
    assert m["max_abs_logit_diff"] == pytest.approx(0.6, abs=1e-6)
    assert m["max_rel_logit_diff"] == pytest.approx(1.2, abs=1e-5)  # 0.6 / 0.5
    assert m["label_agreement"] == 0.5
    assert m["rows_within_tolerance"] == 0.0
    softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    assert m["max_prob_diff"] == pytest.approx(np.abs(softmax(ref) - softmax(out)).max(), abs=1e-6)


def test_regression_agreement_uses_a_band_of_the_output_range():
    ref = np.array([[0.0], [10.0], [5.0]], dtype=np.float32)
    tol = Tolerance(atol=None, regression_band=0.05)  # 5 % of a range of 10 = 0.5
    assert compare(ref, ref + 0.4, "regression", tol)["label_agreement"] == 1.0
    assert compare(ref, ref + np.array([[0.0], [0.0], [0.6]]), "regression", tol)["label_agreement"] == pytest.approx(2 / 3)


def test_gate_passes_within_fp32_tolerance_and_fails_beyond_it():
    reference = _reference()
    ok = check_variant(FakeEngine(reference, delta=1e-6), reference, FP32)
    assert ok["passed"], ok["failures"]
    bad = check_variant(FakeEngine(reference, delta=1e-2), reference, FP32)
    assert not bad["passed"]
    assert any("exceeds atol" in f for f in bad["failures"])


def test_int8_tolerance_ignores_logit_drift_but_not_label_flips():
    reference = _reference()
    drift = check_variant(FakeEngine(reference, delta=0.5), reference, DEFAULT_TOLERANCES["int8"])
    assert drift["passed"]  # the same shift on every logit changes no label
    assert drift["data"]["rows_within_tolerance"] is None
    flip = Reference([Case(c.name, c.kind, c.feed, c.reference) for c in reference.cases], "single_label",
                     reference.token_ids)
    session = FakeEngine(flip)
    first = flip.cases[0]
    session.by_shape[id(first.feed["input_ids"])] = first.reference[:, ::-1].copy()  # reversed logits: labels flip
    report = check_variant(session, flip, DEFAULT_TOLERANCES["int8"])
    assert not report["passed"]
    assert report["data"]["label_agreement"] < 0.99


def test_a_shape_the_graph_cannot_run_fails_the_gate():
    reference = _reference()
    report = check_variant(FakeEngine(reference, fail_batch=1), reference, FP32)
    assert not report["passed"]
    assert any("batch1_seq1" in f and "the runtime failed" in f for f in report["failures"])


def test_token_id_mismatch_fails_the_gate():
    reference = _reference()
    reference.token_ids = {"texts": 40, "equal": 39, "agreement": 39 / 40, "mismatch_examples": [{"row": 3}]}
    report = check_variant(FakeEngine(reference), reference, FP32)
    assert not report["passed"]
    assert any(f.startswith("tokenizer:") for f in report["failures"])


def test_reference_catches_a_tokenizer_with_fixed_padding(minilm_dir, hf_tokenizer):
    """The MiniLM package's own tokenizer.json pads every text to 128: the gate must notice, not score it."""
    from tokenizers import Tokenizer

    from tinymodels import build_tiny_model

    model = build_tiny_model("bert")
    texts = ["short text", "another one, a little longer than the first", "ok"]
    leaky = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))  # truncation + fixed padding at 128
    ref = build_reference(model, hf_tokenizer, leaky, texts, input_names=model.input_names, pad_id=0, max_length=64,
                          problem_type="single_label")
    assert ref.token_ids["equal"] == 0
    assert ref.token_ids["mismatch_examples"][0]["lengths"][1] == 128
    report = check_variant(FakeEngine(ref), ref, FP32)
    assert any(f.startswith("tokenizer:") for f in report["failures"])


def test_sweep_covers_untraced_shapes(hf_tokenizer):
    from tokenizers import Tokenizer

    from tinymodels import build_tiny_model

    model = build_tiny_model("bert")
    tok = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tok.no_padding()
    tok.enable_truncation(32)
    texts = [f"text number {i} " + "word " * i for i in range(20)]
    ref = build_reference(model, hf_tokenizer, tok, texts, input_names=model.input_names, pad_id=0, max_length=32,
                          problem_type="single_label", trace_shape=(2, 13))
    shapes = [tuple(s["shape"]) for s in ref.shapes if s["kind"] == "sweep"]
    assert (1, 1) in shapes and (5, 1) in shapes  # batch 1 / odd batch at sequence 1
    assert (1, 32) in shapes and (2, 32) in shapes  # max_length
    assert any(b % 2 == 1 and b > 1 for b, _ in shapes)  # odd batch sizes
    assert (2, 13) not in shapes  # never the traced shape
    heavy = next(c for c in ref.cases if c.name == "batch7_heavy_padding")
    assert heavy.feed["attention_mask"].mean() < 0.5  # mostly padding
