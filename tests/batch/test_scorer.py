"""The Scorer over Arrow batches: same scores as a direct ONNX Runtime run, input order, chunking, devices."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from batch_data import make_table

from docscore.batch import ScoreOptions, Scorer
from docscore.batch.plan import padded_length, plan_batches
from docscore.batch.windows import cut_windows
from docscore.bundle import load_bundle
from docscore.errors import ConfigError, DeviceError
from docscore.postprocess import scores_from_logits
from docscore.runtime.ort import encodings_to_feed

# The reference runs each sequence alone at its exact length; the scorer pads it to a length bucket derived from its
# own length, and fp32 logits at another padded length differ only by the kernels' summation order.
ATOL = 1e-5


def direct_logits(bundle_dir, encodings) -> np.ndarray:
    """Each sequence alone through a plain ORT session: the reference."""
    b = load_bundle(bundle_dir)
    sess = ort.InferenceSession(str(b.variant_path("fp32")), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], encodings_to_feed([e], b.spec.input_names, b.pad_id))[0]
                           for e in encodings])


def score_matrix(table: pa.Table, labels) -> np.ndarray:
    return np.stack([table.column(f"score_{lab}").to_numpy(zero_copy_only=False) for lab in labels], axis=1)


def test_scores_equal_a_direct_onnxruntime_run(bundle, opts):
    table = make_table(40, seed=5)
    out = Scorer(bundle, opts)(table)
    b = load_bundle(bundle)
    encs = b.tokenizer(truncate=True).encode_batch(table.column("text").to_pylist())
    expected = scores_from_logits(direct_logits(bundle, encs), "single_label")
    labels = b.spec.head.labels
    np.testing.assert_allclose(score_matrix(out, labels), expected, atol=ATOL)
    assert out.column("label").to_pylist() == [labels[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(out.column("score").to_numpy(), expected.max(1), atol=ATOL)
    assert out.column("num_tokens").to_pylist() == [len(e.ids) for e in encs]
    assert set(out.column("num_chunks").to_pylist()) == {1}
    assert out.column("doc_id").to_pylist() == list(range(40))


@pytest.mark.parametrize("budget,window", [(64, 1), (200, 7), (5000, 1000)])
def test_order_and_rows_do_not_depend_on_batching(bundle, opts, budget, window):
    table = make_table(50, seed=6)
    ref = Scorer(bundle, opts)(table)
    out = Scorer(bundle, opts.replace(token_budget=budget, sort_window=window, max_batch_rows=9))(table)
    assert out.num_rows == 50
    assert out.column("doc_id").equals(ref.column("doc_id"))
    assert out.equals(ref)  # every value bit for bit: padding comes from each row's own length


def test_chunk_mode_aggregates_chunk_logits_as_by_hand(bundle, opts):
    table = make_table(12, seed=7, long_every=4)
    b = load_bundle(bundle)
    tok = b.tokenizer(truncate=False)
    labels = b.spec.head.labels
    overlap = 8
    for agg in ("mean", "max"):
        out = Scorer(bundle, opts.replace(long_docs="chunk", chunk_overlap=overlap, chunk_agg=agg))(table)
        for r, text in enumerate(table.column("text").to_pylist()):
            # by hand: windows of max_length - 2 content tokens sharing `overlap` tokens, [CLS] .. [SEP] each
            content = tok.encode(text, add_special_tokens=False).ids
            room, step = b.spec.max_length - 2, b.spec.max_length - 2 - overlap
            starts = list(range(0, max(len(content) - overlap, 1), step))
            chunks = [[101, *content[s:s + room], 102] for s in starts]
            logits = np.concatenate([_run_ids(bundle, c) for c in chunks])
            pooled = logits.mean(0) if agg == "mean" else logits.max(0)
            expected = scores_from_logits(pooled[None], "single_label")[0]
            np.testing.assert_allclose(score_matrix(out.slice(r, 1), labels)[0], expected, atol=ATOL)
            assert out.column("num_chunks")[r].as_py() == len(chunks)
            assert out.column("num_tokens")[r].as_py() == sum(len(c) for c in chunks)
    assert max(out.column("num_chunks").to_pylist()) > 3


def _run_ids(bundle_dir, ids) -> np.ndarray:
    b = load_bundle(bundle_dir)
    sess = ort.InferenceSession(str(b.variant_path("fp32")), providers=["CPUExecutionProvider"])
    arrays = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
              "token_type_ids": np.zeros((1, len(ids)), np.int64)}
    return sess.run(["logits"], {n: arrays[n] for n in b.spec.input_names})[0]


def test_chunk_overlap_must_fit_in_a_window(bundle, opts):
    with pytest.raises(ConfigError, match="chunk_overlap"):
        Scorer(bundle, opts.replace(long_docs="chunk", chunk_overlap=62)).load()


def test_bad_rows_get_an_error_and_keep_their_place(bundle, opts):
    table = pa.table({"doc_id": [1, 2, 3, 4, 5], "text": ["fine text", None, "", "   \n\t ", "also fine"]})
    out = Scorer(bundle, opts)(table)
    assert out.column("doc_id").to_pylist() == [1, 2, 3, 4, 5]
    assert out.column("error").to_pylist() == [None, "null text", "empty text", "empty text", None]
    assert out.column("label").null_count == 3 and out.column("score").null_count == 3
    ints = pa.table({"doc_id": [1, 2], "text": pa.array([7, None], pa.int64())})
    assert Scorer(bundle, opts)(ints).column("error").to_pylist() == ["non-string text: int64", "null text"]


def test_missing_text_column_names_the_columns_present(bundle, opts):
    from docscore.errors import InputDataError

    with pytest.raises(InputDataError, match=r"\['doc_id', 'body'\]"):
        Scorer(bundle, opts)(pa.table({"doc_id": [1], "body": ["x"]}))


def test_io_binding_path_on_cpu_equals_the_plain_run(bundle, opts):
    table = make_table(30, seed=8)
    plain = Scorer(bundle, opts.replace(io_binding=False))(table)
    bound = Scorer(bundle, opts.replace(io_binding=True))
    assert bound.load()._engine.io_binding
    assert bound(table).equals(plain)


def test_cuda_requested_without_a_gpu_fails_loudly(bundle, opts):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    with pytest.raises(DeviceError, match="cuda"):
        Scorer(bundle, opts.replace(device="cuda")).load()


def test_cuda_session_silently_on_cpu_is_refused_naming_the_build():
    from docscore.runtime.ort import check_providers

    build = "onnxruntime-gpu 1.31.1 (built for CUDA 13.0)"
    with pytest.raises(DeviceError, match=r"1\.31\.1 \(built for CUDA 13\.0\).*CUDA provider failed to start"):
        check_providers("cuda", ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"], build)
    with pytest.raises(DeviceError, match=r"onnxruntime-gpu==1\.26\.0 for CUDA 12"):
        check_providers("cuda", ["CPUExecutionProvider"], ["CPUExecutionProvider"], "onnxruntime 1.32.0 (CPU build)")
    check_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider"], build)


def test_cuda_provider_runs_fp32_without_tf32():
    from docscore.runtime.ort import providers_for

    (name, options), fallback = providers_for("cuda")
    assert name == "CUDAExecutionProvider" and options["use_tf32"] == "0" and fallback == "CPUExecutionProvider"
    assert providers_for("cpu") == ["CPUExecutionProvider"]


def test_ort_build_reads_the_packages_own_record(monkeypatch):
    from onnxruntime.capi import build_and_package_info as info

    from docscore.runtime.ort import ort_build

    monkeypatch.setattr(info, "cuda_version", "13.0", raising=False)
    monkeypatch.setattr(info, "package_name", "onnxruntime-gpu", raising=False)
    assert ort_build() == f"onnxruntime-gpu {ort.__version__} (built for CUDA 13.0)"
    monkeypatch.delattr(info, "cuda_version")
    assert ort_build().endswith("(CPU build)")


def test_multi_label_lists_labels_above_threshold(multi_bundle, opts):
    table = make_table(10, seed=9)
    out = Scorer(multi_bundle, opts.replace(multi_label_threshold=0.5))(table)
    labels = load_bundle(multi_bundle).spec.head.labels
    scores = score_matrix(out, labels)
    assert out.column("labels").to_pylist() == [[lab for lab, s in zip(labels, row) if s > 0.5] for row in scores]
    assert ((scores >= 0) & (scores <= 1)).all()


def test_scorer_pickles_as_bundle_path_and_options(bundle, opts):
    scorer = Scorer(bundle, opts)
    table = make_table(8, seed=10)
    first = scorer(table)
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._engine is None and clone.options == opts
    assert clone(table).equals(first)


def test_plan_batches_respects_budget_and_covers_every_sequence():
    lengths = np.array([5, 64, 3, 64, 20, 1, 33, 7] * 5)
    batches = plan_batches(lengths, token_budget=128, max_rows=6, max_length=64)
    seen = np.concatenate([mb.index for mb in batches])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for mb in batches:
        assert (mb.length == padded_length(lengths[mb.index], 64)).all()  # one bucket per batch
        assert len(mb.index) <= 6 and (mb.slots <= 128 or len(mb.index) == 1)


def test_padded_length_depends_only_on_the_row():
    assert padded_length(1, 128) == 8 and padded_length(8, 128) == 8 and padded_length(9, 128) == 16
    assert padded_length(127, 130) == 128 and padded_length(129, 130) == 130  # capped at max_length
    lengths = np.array([5, 64, 3, 64, 20, 1, 33, 7] * 5)
    for budget, rows in ((64, 2), (128, 6), (100_000, 256)):
        for mb in plan_batches(lengths, token_budget=budget, max_rows=rows, max_length=64):
            assert (padded_length(lengths[mb.index], 64) == mb.length).all()


def test_windows_do_not_depend_on_how_rows_arrive():
    table = make_table(100, seed=11)
    lengths = lambda t: np.asarray(pa.compute.utf8_length(t.column("text")).to_numpy(), dtype=np.int64)  # noqa: E731
    whole = [w.column("doc_id").to_pylist() for w in cut_windows([table], lengths, 16, 3000)]
    pieces = [table.slice(i, 7).to_batches()[0] for i in range(0, 100, 7)]
    assert [w.column("doc_id").to_pylist() for w in cut_windows(pieces, lengths, 16, 3000)] == whole
    assert sum(len(w) for w in whole) == 100 and len(whole) > 100 // 16


def test_regression_outputs_the_value_and_no_label(tiny_bundle_factory, opts):
    reg = tiny_bundle_factory(problem_type="regression")
    table = make_table(6, seed=12)
    out = Scorer(reg, opts)(table)
    b = load_bundle(reg)
    encs = b.tokenizer(truncate=True).encode_batch(table.column("text").to_pylist())
    expected = direct_logits(reg, encs)[:, 0]
    np.testing.assert_allclose(out.column("score").to_numpy(), expected, atol=ATOL)
    np.testing.assert_allclose(out.column(f"score_{b.spec.head.labels[0]}").to_numpy(), expected, atol=ATOL)
    assert out.column("label").null_count == 6


def test_rows_of_unknown_tokens_are_flagged(bundle, opts, caplog):
    texts = ["my invoice was charged twice", "🙂🙂🙂 🎉", "x" * 5000, "hello 🙂", None]
    table = pa.table({"doc_id": list(range(5)), "text": texts})
    with caplog.at_level("WARNING", logger="docscore.batch.scorer"):
        out = Scorer(bundle, opts)(table)
    names = out.column_names
    assert names.index("unk_fraction") == names.index("error") - 1
    assert out.schema.field("unk_fraction").type == pa.float32()
    assert out.column("unk_fraction").to_pylist() == [0.0, 1.0, 1.0, 0.5, None]
    assert out.column("label").null_count == 1  # unk rows still get a label: the column is how to tell
    assert "2 of 5 rows are mostly unknown tokens" in caplog.text


def test_unk_fraction_in_chunk_mode_covers_every_chunk(bundle, opts):
    table = pa.table({"doc_id": [0], "text": ["hello " * 100 + "🙂 " * 100]})  # 100 known + 100 unknown tokens
    out = Scorer(bundle, opts.replace(long_docs="chunk", chunk_overlap=0))(table)
    assert out.column("num_chunks")[0].as_py() > 2
    assert out.column("unk_fraction")[0].as_py() == 0.5
