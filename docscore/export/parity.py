"""The parity gate: PyTorch on the training tokenizer against ONNX Runtime on the bundle's ``tokenizer.json``.

Two sets of inputs, both fixed before any variant is judged:

* **data** — real texts (``--verify-data``, else ``samples/eval.csv``), end to end: text → the checkpoint's
  Hugging Face tokenizer → PyTorch logits, against text → ``tokenizer.json`` → ONNX Runtime logits. The token
  ids of the two tokenizers are compared too.
* **sweep** — shapes the exporter never traced: batch 1 and odd sizes, sequence 1 and ``max_length``, heavily
  padded batches; the same ids go to both runtimes, so a trace that baked a shape into the graph shows here.

Each variant gets a JSON-ready report (kept in the manifest) and passes or fails against its
:class:`~docscore.export.options.Tolerance`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docscore.errors import InputDataError
from docscore.postprocess import predicted_index, scores_from_logits
from docscore.runtime.ort import encodings_to_feed

log = logging.getLogger(__name__)

# Used only when no verify data is given and the source checkout's samples are absent (an installed package).
FALLBACK_TEXTS = (
    "My invoice shows a charge twice this month, please refund the duplicate.",
    "The parcel was marked delivered but nothing arrived at my door.",
    "The app crashes every time I open the settings page on Android 14.",
    "How do I change the email address on my account?",
    "ok",
    "Hi",
    "Thanks!",
    "I was billed after cancelling my subscription. Order 48213. This is the third time I write about it, "
    "and nobody has answered yet; I would like the money back and a confirmation that the plan is closed.",
    "Tracking has not updated for nine days; the courier says the label was never scanned.",
    "Password reset emails never reach my inbox, even the spam folder.",
    "Can I get a VAT receipt for the annual plan?",
    "The package arrived damaged, the box was crushed on one side and the screen is cracked.",
)

# Below this magnitude a reference logit is too close to zero for a relative difference to mean anything.
REL_FLOOR = 1e-3


def read_texts(path: str | Path, column: str = "text", limit: int = 1000) -> list[str]:
    """The first ``limit`` non-empty strings of ``column`` in a Parquet or CSV file."""
    from docscore.data import read_table

    table = read_table(path)
    if column not in table.column_names:
        raise InputDataError(f"no text column {column!r} (columns: {table.column_names}); pass --text-column",
                             path=path, column=column)
    texts = [t for t in table.column(column).to_pylist() if isinstance(t, str) and t.strip()]
    if not texts:
        raise InputDataError("the file holds no non-empty text", path=path, column=column)
    return texts[:limit]


@dataclass
class Case:
    """One batch both runtimes see: ``feed`` for ONNX Runtime, ``reference`` = PyTorch logits ``(B, L)``."""

    name: str
    kind: str  # "data" | "sweep"
    feed: dict[str, np.ndarray]
    reference: np.ndarray


@dataclass
class Reference:
    """PyTorch logits for every case, computed once and shared by every variant."""

    cases: list[Case]
    problem_type: str
    token_ids: dict = field(default_factory=dict)  # tokenizer comparison, variant-independent
    data_source: str = ""
    long_text: str = ""  # a text longer than max_length (the sweep's; the invariance check reuses it)

    @property
    def shapes(self) -> list[dict]:
        return [{"case": c.name, "kind": c.kind, "shape": list(next(iter(c.feed.values())).shape)} for c in self.cases]


def _torch_logits(model, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return out.float().numpy()


def _sweep_feeds(encodings, input_names, pad_id: int, max_length: int, trace_shape, long_encoding):
    """Shapes the exporter never traced. Built from the bundle tokenizer's own encodings."""
    by_len = sorted(encodings, key=lambda e: len(e.ids))
    short = by_len[:6]
    mixed = [by_len[i * (len(by_len) - 1) // 8] for i in range(9)]  # nine rows spread over all lengths

    def feed(encs, length=None):
        return encodings_to_feed(encs, input_names, pad_id, length)

    one_token = feed([by_len[0]], None)
    one_token = {k: v[:, :1] for k, v in one_token.items()}  # sequence 1: the first ([CLS]/<s>) token only
    five_one_token = {k: np.repeat(v, 5, axis=0) for k, v in one_token.items()}
    cases = [
        ("batch1_seq1", one_token),
        ("batch5_seq1", five_one_token),
        ("batch1_shortest", feed([by_len[0]])),
        ("batch1_max_length", feed([long_encoding])),
        ("batch3_odd", feed(mixed[::4][:3])),
        ("batch2_max_length", feed([long_encoding, long_encoding])),
        ("batch7_heavy_padding", feed([long_encoding] + short[:6])),
        ("batch9_mixed_lengths", feed(mixed)),
        ("batch4_padded_to_max", feed(short[:4], max([max_length] + [len(e.ids) for e in short[:4]]))),
    ]
    traced = tuple(trace_shape)
    return [(name, f) for name, f in cases if tuple(next(iter(f.values())).shape) != traced]


def build_reference(model, hf_tokenizer, bundle_tokenizer, texts: list[str], *, input_names, pad_id: int,
                    max_length: int, problem_type: str, batch_size: int = 16, trace_shape=(2, 13),
                    data_source: str = "") -> Reference:
    """Tokenize ``texts`` both ways, run PyTorch once on every data batch and sweep case.

    Args:
        model: the PyTorch ``DocClassifier`` in eval mode.
        hf_tokenizer: the checkpoint's (training) tokenizer.
        bundle_tokenizer: ``tokenizers.Tokenizer`` loaded from the bundle's ``tokenizer.json``, exactly as the
            scorer loads it (no padding, truncation at ``max_length``).
    """
    cases: list[Case] = []
    mismatches = []
    equal = 0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start: start + batch_size]
        hf = hf_tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        hf_feed = {}
        for name in input_names:
            arr = hf.get(name)
            hf_feed[name] = (np.zeros_like(hf["input_ids"]) if arr is None else arr).astype(np.int64)
        encodings = bundle_tokenizer.encode_batch(chunk)
        for i, enc in enumerate(encodings):
            n = int(hf["attention_mask"][i].sum())
            hf_ids = hf["input_ids"][i][hf["attention_mask"][i].astype(bool)].tolist() if n else []
            if hf_ids == enc.ids:
                equal += 1
            elif len(mismatches) < 3:
                mismatches.append({"row": start + i, "training_tokenizer": hf_ids[:12], "bundle": enc.ids[:12],
                                   "lengths": [len(hf_ids), len(enc.ids)]})
        ref = _torch_logits(model, hf_feed)  # text -> training tokenizer -> PyTorch
        cases.append(Case(f"data[{start}:{start + len(chunk)}]", "data",
                          encodings_to_feed(encodings, input_names, pad_id), ref))
    all_encodings = bundle_tokenizer.encode_batch(texts)
    long_text = " ".join(texts)
    while len(bundle_tokenizer.encode(long_text).ids) < max_length:
        long_text = long_text + " " + long_text
    long_encoding = bundle_tokenizer.encode(long_text)
    for name, feed in _sweep_feeds(all_encodings, input_names, pad_id, max_length, trace_shape, long_encoding):
        cases.append(Case(name, "sweep", feed, _torch_logits(model, feed)))
    token_ids = {"texts": len(texts), "equal": equal, "agreement": equal / max(len(texts), 1),
                 "mismatch_examples": mismatches}
    if mismatches:
        log.warning("bundle tokenizer and training tokenizer disagree on %d of %d texts", len(texts) - equal,
                    len(texts))
    return Reference(cases, problem_type, token_ids, data_source, long_text)


def _agreement(ref: np.ndarray, out: np.ndarray, problem_type: str, band: float) -> float:
    if len(ref) == 0:
        return 1.0
    if problem_type == "regression":
        scale = float(ref.max() - ref.min()) or 1.0
        return float(np.mean(np.all(np.abs(out - ref) <= band * scale, axis=-1)))
    return float(np.mean(predicted_index(scores_from_logits(ref, problem_type), problem_type)
                         == predicted_index(scores_from_logits(out, problem_type), problem_type)))


def compare(ref: np.ndarray, out: np.ndarray, problem_type: str, tol) -> dict:
    """Difference metrics of two ``(N, L)`` logit arrays."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    big = np.abs(ref) >= REL_FLOOR
    prob = np.abs(scores_from_logits(out, problem_type).astype(np.float64)
                  - scores_from_logits(ref, problem_type).astype(np.float64))
    within = None if tol.atol is None else float(np.mean(np.all(diff <= tol.atol + tol.rtol * np.abs(ref), axis=-1)))
    return {
        "rows": int(len(ref)),
        "max_abs_logit_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_logit_diff": float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0,
        "max_prob_diff": float(prob.max()) if prob.size else 0.0,
        "label_agreement": _agreement(ref, out, problem_type, tol.regression_band),
        "rows_within_tolerance": within,
    }


def check_variant(engine, reference: Reference, tolerance) -> dict:
    """Run every case through ``engine`` (anything with ``run(feed) -> logits``, see
    :func:`docscore.runtime.engine.open_engine`) and judge it.

    Returns:
        the parity report: ``passed``, ``failures`` (human-readable), ``tolerance``, per-kind metrics
        (``data``, ``sweep``) and the tokenizer comparison.
    """
    outs: dict[str, list] = {"data": [], "sweep": []}
    refs: dict[str, list] = {"data": [], "sweep": []}
    failures = []
    for case in reference.cases:
        try:
            out = engine.run(case.feed)
        except Exception as e:  # a runtime failure on an unseen shape is a gate failure, not a crash
            failures.append(f"{case.name}: the runtime failed on shape {list(case.feed['input_ids'].shape)}: {e}")
            continue
        if out.shape != case.reference.shape:
            failures.append(f"{case.name}: output shape {list(out.shape)} != PyTorch {list(case.reference.shape)}")
            continue
        outs[case.kind].append(out)
        refs[case.kind].append(case.reference)
    report: dict = {"tolerance": tolerance.to_dict()}
    for kind in ("data", "sweep"):
        if refs[kind]:
            report[kind] = compare(np.concatenate(refs[kind]), np.concatenate(outs[kind]), reference.problem_type,
                                   tolerance)
    report["data_source"] = reference.data_source
    report["sweep_shapes"] = [s["shape"] for s in reference.shapes if s["kind"] == "sweep"]
    report["token_ids"] = reference.token_ids
    for kind in ("data", "sweep"):
        m = report.get(kind)
        if m is None:
            continue
        if m["rows_within_tolerance"] is not None and m["rows_within_tolerance"] < 1.0:
            failures.append(f"{kind}: max |logit diff| {m['max_abs_logit_diff']:.3g} exceeds atol={tolerance.atol} "
                            f"+ rtol={tolerance.rtol}·|logit| on {1 - m['rows_within_tolerance']:.1%} of rows")
        if tolerance.max_prob_diff is not None and m["max_prob_diff"] > tolerance.max_prob_diff:
            failures.append(f"{kind}: max score diff {m['max_prob_diff']:.3g} > {tolerance.max_prob_diff}")
    data = report.get("data")
    if data is not None and data["label_agreement"] < tolerance.min_label_agreement:
        failures.append(f"data: label agreement {data['label_agreement']:.2%} < "
                        f"{tolerance.min_label_agreement:.2%} over {data['rows']} texts")
    if reference.token_ids.get("agreement", 1.0) < 1.0:
        failures.append(f"tokenizer: bundle tokenizer.json gives different token ids than the training tokenizer on "
                        f"{reference.token_ids['texts'] - reference.token_ids['equal']} of "
                        f"{reference.token_ids['texts']} texts, e.g. {reference.token_ids['mismatch_examples'][:1]}")
    report["failures"] = failures
    report["passed"] = not failures
    return report


def summarize(report: dict) -> str:
    """One line per report, for logs and the CLI."""
    d = report.get("data", {})
    s = report.get("sweep", {})
    return (f"max|Δlogit| data {d.get('max_abs_logit_diff', float('nan')):.2e} sweep "
            f"{s.get('max_abs_logit_diff', float('nan')):.2e}, max|Δscore| {d.get('max_prob_diff', float('nan')):.2e}, "
            f"label agreement {d.get('label_agreement', float('nan')):.2%} ({d.get('rows', 0)} texts, "
            f"{len(report.get('sweep_shapes', []))} sweep shapes)")
