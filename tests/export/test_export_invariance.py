"""The invariance check in the gate: a variant whose scores depend on batching is refused (or, on request, kept and
marked), and the batch-invariant variants are bit-identical however their rows are batched."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from docscore.batch import ScoreOptions, Scorer
from docscore.runtime.choose import ranking
from docscore.bundle import load_bundle
from docscore.errors import ConfigError, ParityError
from docscore.export import ExportOptions, export_bundle

LOOSE = {"int8": {"min_label_agreement": 0.9}, "int8-dynamic": {"min_label_agreement": 0.85}}


def _leftovers(out):
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_static_int8_and_fp32_are_bit_identical_under_every_layout(tiny_bundle_factory):
    bundle = load_bundle(tiny_bundle_factory(variants=("fp32", "optimized", "int8")))
    for name in ("fp32", "optimized", "int8"):
        inv = bundle.variants[name]["invariance"]
        assert inv["passed"] and inv["bit_identical"], (name, inv)
        assert set(inv["layouts"]) >= {"budget_256", "budget_8192", "rows_3_window_7", "budget_8192_threads_1"}


def test_openvino_splits_a_batch_across_streams_with_the_same_bits(tiny_bundle_factory):
    """The OpenVINO engine runs a batch as one slice per stream, at once; every row's logits equal the one-stream
    run's and the row's own, alone (odd row counts leave slices of unequal size)."""
    import numpy as np

    from docscore.runtime.ov import OpenVINOEngine

    bundle = load_bundle(tiny_bundle_factory(variants=("fp32", "int8")))
    path = bundle.variant_path("int8")
    precision = bundle.variants["int8"]["precision"]
    one, two = (OpenVINOEngine(path, precision, threads=2, streams=n) for n in (1, 2))
    assert (one.streams, two.streams) == (1, 2) and OpenVINOEngine(path, precision, threads=1).streams == 1
    rng = np.random.default_rng(0)
    for rows in (1, 2, 5, 16):
        ids = rng.integers(5, 90, size=(rows, 24))
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        split = two.run(feed)
        assert split.shape[0] == rows and np.array_equal(split, one.run(feed)), rows
        alone = np.concatenate([one.run({k: v[i:i + 1] for k, v in feed.items()}) for i in range(rows)])
        assert np.array_equal(split, alone), rows


def test_openvino_compiles_in_the_background_with_the_same_bits_and_reports_a_failure(tiny_bundle_factory,
                                                                                      tmp_path):
    """``score`` lets an OpenVINO model compile while it reads and tokenises: the first run waits for it, the
    logits are the ones a model compiled in the foreground gives, and a compile failure surfaces there, named."""
    import numpy as np

    from docscore.runtime.ov import OpenVINOEngine

    bundle = load_bundle(tiny_bundle_factory(variants=("fp32", "int8")))
    path, precision = bundle.variant_path("int8"), bundle.variants["int8"]["precision"]
    ids = np.random.default_rng(1).integers(5, 90, size=(5, 17))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    background = OpenVINOEngine(path, precision, threads=2, background=True)
    assert np.array_equal(background.run(feed), OpenVINOEngine(path, precision, threads=2).run(feed))
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>not a model</net>")
    engine = OpenVINOEngine(broken, precision, threads=1, background=True)  # the checks pass; compiling fails
    with pytest.raises(ConfigError, match="OpenVINO could not compile .*broken.xml"):
        engine.run(feed)
    with pytest.raises(ConfigError, match="broken.xml"):  # and again on every later call, never a silent None
        engine.ready()


def test_dynamic_int8_is_refused_as_batch_dependent(tiny_checkpoint_factory, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ParityError, match="int8-dynamic: scores depend on batching") as err:
        export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=out, quantize="int8-dynamic",
                                                                     tolerances=LOOSE))
    assert "--allow-batch-dependent" in str(err.value)
    assert not out.exists() and _leftovers(out) == []


def test_allow_batch_dependent_keeps_it_marked_and_never_default(tiny_checkpoint_factory, tmp_path, caplog):
    out = export_bundle(tiny_checkpoint_factory("bert"),
                        ExportOptions(output=tmp_path / "b", quantize="int8-dynamic", tolerances=LOOSE,
                                      allow_batch_dependent=True))
    bundle = load_bundle(out)
    dyn = bundle.variants["int8-dynamic"]
    assert dyn["verified"] and dyn["batch_dependent"] and not dyn["invariance"]["passed"]
    r = ranking(bundle)
    assert "batch-dependent" in r["excluded"]["int8-dynamic"] and r["chosen"] == "fp32"
    with caplog.at_level(logging.WARNING, logger="docscore.batch.scorer"):
        Scorer(bundle, ScoreOptions(variant="int8-dynamic"))(pa.table({"text": ["my parcel is late"]}))
    assert "batch-dependent" in caplog.text


def test_scores_do_not_depend_on_companions_budget_or_layout(tiny_bundle_factory):
    """The scorer end to end: the same texts alone, with other texts, under other budgets and windows."""
    bundle = tiny_bundle_factory(variants=("fp32", "int8"))
    texts = ["refund " * n for n in (1, 3, 7, 15, 40, 90)] + ["where is my parcel", "app crashes", "ok"]
    for variant in ("fp32", "int8"):
        base = ScoreOptions(variant=variant)
        whole = Scorer(bundle, base)(pa.table({"text": texts}))
        for t_i, text in enumerate(texts):
            alone = Scorer(bundle, base.replace(max_batch_rows=1))(pa.table({"text": [text]}))
            assert alone.equals(whole.slice(t_i, 1)), (variant, text)
        for changes in ({"token_budget": 64}, {"sort_window": 2}, {"max_batch_rows": 3}, {"threads": 1}):
            shuffled = texts[::-1]
            out = Scorer(bundle, base.replace(**changes))(pa.table({"text": shuffled}))
            assert out.equals(pa.concat_tables([whole.slice(i, 1) for i in range(len(texts))][::-1])), changes


def test_bf16_is_refused_up_front_where_the_cpu_cannot_verify_it(tiny_checkpoint_factory, tmp_path, monkeypatch):
    from docscore.runtime import ov
    from docscore.errors import ConfigError

    monkeypatch.setattr(ov, "native_bf16", lambda: False)  # any host: as a CPU without bf16
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match="--bf16 needs OpenVINO and a CPU with native bf16"):
        export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=out, bf16=True))
    assert not out.exists() and _leftovers(out) == []


def test_bf16_is_exported_behind_the_gate_and_bit_identical_where_the_cpu_has_it(tiny_checkpoint_factory,
                                                                                   tmp_path):
    from docscore.runtime import ov

    if not ov.native_bf16():
        pytest.skip("no native bf16 on this CPU: the refusal is tested above")
    bundle = load_bundle(export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=tmp_path / "b",
                                                                                      bf16=True)))
    bf16 = bundle.variants["bf16"]
    assert bf16["verified"] and (bf16["runtime"], bf16["precision"]) == ("openvino", "bf16")
    assert bf16["file"] == bundle.variants["fp32"]["file"]  # the fp32 graph, run at bf16 precision
    inv = bf16["invariance"]
    # OpenVINO's bf16 matmuls are bit-identical across batch sizes on the MiniLM body (tested there); on this
    # 32-wide body, batches of the 8192-token budget moved scores by 3e-8 (the kernel depends on the matrix rows,
    # batch included): the contract's fallback, within 1e-6 and no label change, and the gate says which holds.
    assert inv["passed"] and inv["label_changes"] == 0 and inv["max_abs_score_diff"] <= 1e-6, json.dumps(inv)
    assert set(inv["layouts"]) >= {"budget_256", "budget_8192", "rows_3_window_7", "budget_8192_threads_1"}


def test_int8_calibrates_on_the_calibration_data_and_records_it(tiny_checkpoint_factory, tmp_path):
    from docscore.errors import InputDataError
    from docscore.files import sha256_file

    calib = tmp_path / "calib.parquet"
    pq.write_table(pa.table({"body": [f"calibration document {i} about invoices and parcels" * (1 + i % 5)
                                      for i in range(40)]}), calib)
    ckpt = tiny_checkpoint_factory("bert")
    with pytest.raises(ConfigError, match="add --quantize int8"):
        ExportOptions(output=tmp_path / "x", calibration_data=calib)
    with pytest.raises(InputDataError, match="no text column 'text'") as err:  # before any export work
        export_bundle(ckpt, ExportOptions(output=tmp_path / "x", quantize="int8", calibration_data=calib))
    assert "calib.parquet" in str(err.value) and not (tmp_path / "x").exists()
    verify = tmp_path / "verify.csv"
    verify.write_text("body\n" + "\n".join(f"a short support ticket number {i}" for i in range(30)) + "\n")
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b", quantize="int8", calibration_data=calib,
                                            calibration_rows=25, verify_data=verify, text_column="body",
                                            tolerances=LOOSE))
    q = load_bundle(out).variants["int8"]["quantization"]
    assert q["calibration"] == {"source": str(calib), "rows": 25, "sha256": sha256_file(calib)}
    # SmoothQuant "auto": both candidates built and measured on the calibration texts, the closer one kept
    sq = q["smooth_quant"]
    errors = {k: v["mean_abs_logit_diff"] for k, v in sq["candidates"].items()}
    assert sq["requested"] == "auto" and set(errors) == {"off", "0.95"} and all(v >= 0 for v in errors.values())
    assert sq["alpha"] == (None if errors["off"] <= errors["0.95"] else 0.95)


@pytest.mark.parametrize("requested,alpha", [("off", None), ("0.5", 0.5)])
def test_a_fixed_smooth_quant_builds_one_candidate(tiny_bundle_factory, tmp_path, requested, alpha):
    from tokenizers import Tokenizer

    from docscore.export import variants
    from docscore.export.options import parse_smooth_quant
    from docscore.runtime.ort import encodings_to_feed

    bundle = load_bundle(tiny_bundle_factory(variants=("fp32",)))
    tok = Tokenizer.from_file(str(bundle.path / "tokenizer.json"))
    feeds = [encodings_to_feed([e], bundle.spec.input_names, 0) for e in tok.encode_batch([f"a calibration text number {i} about parcels" * (1 + i % 3) for i in range(8)])]
    files, info = variants.quantize_int8_static(bundle.variant_path("fp32"), tmp_path / "m.xml", feeds,
                                                calibration={"rows": 8}, smooth_quant=parse_smooth_quant(requested))
    assert info["quantization"]["smooth_quant"] == {"requested": requested, "alpha": alpha}
    assert all((tmp_path / f).is_file() for f in files)


def test_smooth_quant_option_is_checked():
    from docscore.export.options import parse_smooth_quant

    assert [parse_smooth_quant(v) for v in ("auto", "OFF", "1", 0.25)] == ["auto", "off", "1.0", "0.25"]
    for bad in ("0", "1.5", "-1", "on", ""):
        with pytest.raises(ConfigError, match="smooth_quant"):
            parse_smooth_quant(bad)
