"""export_bundle / verify_bundle on tiny bodies: every architecture, pooling and problem type; gates that fail."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from docscore.bundle import MANIFEST_NAME, TOKENIZER_NAME, load_bundle
from docscore.errors import BundleError, ConfigError, ParityError
from docscore.export import ExportOptions, export_bundle, verify_bundle
from docscore.export.graph import check_symbolic_axes

CASES = [  # (arch, pooling, problem_type): every arch once, every pooling and problem type at least once
    ("bert", "mean", "single_label"),
    ("distilbert", "mean", "single_label"),
    ("roberta", "cls", "multi_label"),
    ("xlm-roberta", "mean", "regression"),
    ("electra", "cls", "single_label"),
    ("deberta-v2", "mean", "multi_label"),
    ("bert", "pooler", "regression"),
    ("bert", "cls", "multi_label"),
]


def _leftovers(out: Path) -> list[str]:
    """Anything the export left beside the target: temp dirs are named ``.<name>.tmp-*`` / ``.<name>.old-*``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("arch,pooling,problem_type", CASES)
def test_export_passes_the_gate_with_symbolic_axes(tiny_bundle_factory, tiny_checkpoint_factory, arch, pooling,
                                                   problem_type):
    bundle_dir = tiny_bundle_factory(arch, pooling, problem_type)
    bundle = load_bundle(bundle_dir)
    spec = bundle.spec
    assert (spec.head.pooling, spec.head.problem_type, spec.max_length) == (pooling, problem_type, 64)
    graph = onnx.load(str(bundle.variant_path("fp32")))
    assert [i.name for i in graph.graph.input] == list(spec.input_names)
    check_symbolic_axes(graph, spec.input_names, spec.output_name)  # raises if an axis was pinned
    for i in graph.graph.input:
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
    fp32 = bundle.variants["fp32"]
    assert fp32["verified"] is True and fp32["parity"]["passed"]
    assert fp32["parity"]["data"]["rows"] == 120 and fp32["parity"]["token_ids"]["agreement"] == 1.0
    # the gate allows 1e-4; float32 reassociation across kernels stays far below it (README: ~1e-6)
    assert fp32["parity"]["data"]["max_abs_logit_diff"] < 1e-5
    assert fp32["parity"]["sweep"]["max_abs_logit_diff"] < 1e-5
    assert [1, 1] in fp32["parity"]["sweep_shapes"] and [1, 64] in fp32["parity"]["sweep_shapes"]
    if arch == "bert":
        assert "token_type_ids" in spec.input_names  # bodies with token types keep the input
    if arch == "distilbert":
        assert "token_type_ids" not in spec.input_names


def test_manifest_records_what_a_scorer_and_an_auditor_need(tiny_bundle_factory):
    bundle_dir = tiny_bundle_factory()
    m = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    e = m["export"]
    assert (e["exporter"], e["attention"], e["opset"]) == ("legacy", "eager", 17)
    assert {"torch", "onnx", "onnxruntime", "transformers"} <= set(e["versions"])
    assert e["io"]["inputs"]["input_ids"] == {"dtype": "int64", "shape": ["batch", "sequence"]}
    assert e["io"]["outputs"]["logits"]["dtype"] == "float32"
    assert m["spec"]["head"]["labels"] == ["billing", "shipping", "tech"]
    assert set(m["files"]) == {"model.onnx", TOKENIZER_NAME, "gate_texts.json"}
    gate = json.loads((bundle_dir / "gate_texts.json").read_text())  # the texts the gate ran on, for verify
    assert gate["rows"] == 120 and "samples/eval.csv" in gate["source"] and "gate_texts.json" in gate["source"]
    assert m["tokenizer"]["pad_id"] == 0
    tok = json.loads((bundle_dir / TOKENIZER_NAME).read_text())
    assert tok["padding"] is None and tok["truncation"]["max_length"] == 64


def test_bundle_tokenizer_never_pads_to_a_fixed_length(tiny_bundle_factory):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_bundle_factory() / TOKENIZER_NAME))  # plain load, as a naive user would
    assert len(tok.encode("hi").ids) == 3
    assert len(tok.encode("word " * 500).ids) == 64


def test_dynamo_exporter_and_sdpa_attention_pass_the_gate(tiny_checkpoint_factory, tmp_path):
    out = export_bundle(tiny_checkpoint_factory("bert"),
                        ExportOptions(output=tmp_path / "b", exporter="dynamo", attention="sdpa"))
    m = load_bundle(out).manifest
    assert (m["export"]["exporter"], m["export"]["attention"], m["export"]["opset"]) == ("dynamo", "sdpa", 18)
    assert m["variants"]["fp32"]["verified"]
    check_symbolic_axes(onnx.load(str(out / "model.onnx")), m["spec"]["input_names"], "logits")


def test_optimized_variant_reports_fusions(tiny_bundle_factory):
    bundle = load_bundle(tiny_bundle_factory(variants=("fp32", "optimized")))
    opt = bundle.variants["optimized"]
    assert opt["verified"] and opt["parity"]["passed"]
    assert opt["fusions"]["Attention"] == 2 and opt["fusions"]["EmbedLayerNormalization"] == 1


def test_int8_is_judged_on_label_agreement(tiny_checkpoint_factory, tmp_path):
    # A tiny *random* body has near-tied logits, so int8 flips a few labels: the gate must see that. Real bodies
    # are held to 99 % (see the slow MiniLM test); here 90 % lets the variant through and 100 % must refuse it.
    ckpt = tiny_checkpoint_factory("bert")
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b", optimize=True, quantize="int8",
                                            tolerances={"int8": {"min_label_agreement": 0.9}}))
    int8 = load_bundle(out).variants["int8"]
    assert int8["verified"] and int8["dtype"] == "int8" and int8["quantization"]["mode"] == "static"
    assert int8["runtime"] == "openvino" and int8["file"] == "model.int8.xml"
    assert int8["parity"]["data"]["rows_within_tolerance"] is None  # logits are not gated for int8
    agreement = int8["parity"]["data"]["label_agreement"]
    assert 0.9 <= agreement < 1.0  # measured: the tiny body's near-ties flip a few labels, so the refusal below runs
    assert int8["size_bytes"] < load_bundle(out).variants["optimized"]["size_bytes"]
    strict = tmp_path / "strict"
    with pytest.raises(ParityError, match="int8: data: label agreement") as e:
        export_bundle(ckpt, ExportOptions(output=strict, optimize=True, quantize="int8",
                                          tolerances={"int8": {"min_label_agreement": 1.0}}))
    assert not strict.exists() and _leftovers(strict) == []
    # the message names the texts and the next steps: calibrate on archive text, or keep the variants that passed
    assert "gate_texts.json" in str(e.value) and "--calibration-data" in str(e.value)
    assert "(fp32, optimized passed)" in str(e.value)
    # the export table: int8 logits are shown as not gated, runtimes named as in the README
    import io

    from docscore.commands.export import render_variants

    table = io.StringIO()
    render_variants(load_bundle(out).variants, table)
    rows = {line.split()[0]: line for line in table.getvalue().splitlines()[1:] if line and not line[0].isspace()}
    assert "(not gated)" in rows["int8"] and "openvino / int8 + " in rows["int8"]
    assert "(not gated)" not in rows["fp32"] and "onnxruntime / f32" in rows["fp32"]


def test_fp16_without_cuda_is_kept_unverified(tiny_bundle_factory):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA present: fp16 is verified for real here")
    bundle = load_bundle(tiny_bundle_factory(variants=("fp32", "fp16")))
    fp16 = bundle.variants["fp16"]
    assert fp16["verified"] is False and fp16["parity"] is None and "not verified" in fp16["note"]
    from docscore.runtime.choose import choose_variant

    assert choose_variant(bundle) == "fp32"


def test_a_perturbed_graph_fails_the_gate_and_leaves_nothing(tiny_checkpoint_factory, tmp_path, monkeypatch):
    from docscore.export import graph

    real = graph.export_graph

    def perturbed(model, input_names, output_name, path, **kw):
        real(model, input_names, output_name, path, **kw)
        g = onnx.load(str(path))
        for init in g.graph.initializer:  # nudge the classifier bias: a bug the gate must catch
            if init.name.endswith("classifier.bias"):
                arr = onnx.numpy_helper.to_array(init) + 0.05
                init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
                break
        else:
            raise AssertionError("classifier bias not found")
        onnx.save(g, str(path))

    monkeypatch.setattr(graph, "export_graph", perturbed)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="fp32: data: max \\|logit diff\\|") as err:
        export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=out))
    assert err.value.exit_code == 3
    assert not out.exists() and _leftovers(out) == []


def test_a_failed_export_keeps_the_previous_bundle(tiny_checkpoint_factory, tmp_path):
    ckpt = tiny_checkpoint_factory("bert")
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b"))
    before = (out / MANIFEST_NAME).read_text()
    with pytest.raises(ParityError):
        export_bundle(ckpt, ExportOptions(output=out, overwrite=True,
                                          tolerances={"fp32": {"atol": 0.0, "rtol": 0.0}}))
    assert (out / MANIFEST_NAME).read_text() == before and _leftovers(out) == []
    load_bundle(out)


def test_an_existing_bundle_is_replaced_only_with_overwrite_and_never_with_foreign_files(tiny_checkpoint_factory,
                                                                                        tmp_path, caplog):
    ckpt = tiny_checkpoint_factory("bert")
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b", optimize=True))
    before = (out / MANIFEST_NAME).read_text()
    with pytest.raises(ConfigError, match="already holds a bundle; pass --overwrite"):
        export_bundle(ckpt, ExportOptions(output=out))
    assert (out / MANIFEST_NAME).read_text() == before and (out / "model.optimized.onnx").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files its bundle manifest does not list \(notes.txt\)"):
        export_bundle(ckpt, ExportOptions(output=out, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.optimized.onnx").exists()
    (out / "notes.txt").unlink()
    export_bundle(ckpt, ExportOptions(output=out, overwrite=True))
    assert not (out / "model.optimized.onnx").exists() and "replacing the bundle at" in caplog.text


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(tiny_checkpoint_factory, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a docscore bundle"):
        export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=target))
    assert (target / "notes.txt").read_text() == "keep me"


def test_forced_external_data_is_written_hashed_and_loaded(tiny_checkpoint_factory, tmp_path):
    out = export_bundle(tiny_checkpoint_factory("bert"),
                        ExportOptions(output=tmp_path / "b", external_data=True, optimize=True))
    bundle = load_bundle(out)
    assert bundle.manifest["export"]["external_data"] is True
    for name in ("fp32", "optimized"):
        v = bundle.variants[name]
        assert v["external_data"] == [v["file"] + ".data"] and v["verified"]
        assert v["external_data"][0] in bundle.manifest["files"]
    graph_only = (out / "model.onnx").stat().st_size
    assert graph_only < (out / "model.onnx.data").stat().st_size / 10  # the weights really live outside
    (out / "model.onnx.data").write_bytes((out / "model.onnx.data").read_bytes()[:-16])
    with pytest.raises(BundleError, match="model.onnx.data: sha256 mismatch"):
        load_bundle(out)


def test_tampered_or_truncated_files_are_refused(tiny_checkpoint_factory, tmp_path):
    out = export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=tmp_path / "b"))
    data = bytearray((out / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx: sha256 mismatch"):
        load_bundle(out)
    with pytest.raises(BundleError):
        verify_bundle(out)
    (out / TOKENIZER_NAME).unlink()
    with pytest.raises(BundleError, match="tokenizer.json: missing"):
        load_bundle(out)


def test_verify_reruns_parity_against_the_checkpoint(tiny_bundle_factory, tiny_checkpoint_factory):
    bundle_dir = tiny_bundle_factory(variants=("fp32", "optimized"))
    report = verify_bundle(bundle_dir, checkpoint=tiny_checkpoint_factory("bert"))
    assert report["passed"] and report["hashes"] == "ok"
    assert all(v["rechecked"] and v["parity"]["passed"] for v in report["variants"].values())
    with pytest.raises(ParityError, match="no longer matches .*: its weights changed since export"):  # same spec
        verify_bundle(bundle_dir, checkpoint=_reweighted(tiny_checkpoint_factory("bert")))
    with pytest.raises(BundleError, match="does not match bundle"):  # another head altogether
        verify_bundle(bundle_dir, checkpoint=tiny_checkpoint_factory("bert", "cls", "multi_label"))


def _reweighted(ckpt: Path) -> Path:
    """A copy of a checkpoint with its classifier bias moved: same spec, different model."""
    import shutil

    from safetensors.torch import load_file, save_file

    dst = ckpt.parent / (ckpt.name + "-moved")
    if not dst.exists():
        shutil.copytree(ckpt, dst)
        weights = load_file(str(dst / "model.safetensors"))
        weights["head.classifier.bias"] = weights["head.classifier.bias"] + 0.5
        save_file(weights, str(dst / "model.safetensors"))
    return dst


def test_bundle_scores_without_torch(tiny_bundle_factory):
    """A scoring host has no torch: the bundle must load and run with torch unimportable."""
    bundle_dir = tiny_bundle_factory()
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        sys.modules["transformers"] = None
        from docscore.runtime.choose import choose_variant
        from docscore.bundle import load_bundle
        from docscore.runtime.ort import create_session, encodings_to_feed
        from docscore.postprocess import scores_from_logits
        b = load_bundle({str(bundle_dir)!r})
        tok = b.tokenizer()
        sess = create_session(b.variant_path(choose_variant(b)), threads=1)
        feed = encodings_to_feed(tok.encode_batch(["my invoice is wrong", "parcel lost"]), b.spec.input_names, b.pad_id)
        logits = sess.run([b.spec.output_name], feed)[0]
        scores = scores_from_logits(logits, b.spec.head.problem_type)
        assert scores.shape == (2, 3), scores.shape
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        print("ok", choose_variant(b))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok fp32")


def test_opset_and_max_length_are_selectable(tiny_checkpoint_factory, tmp_path):
    out = export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=tmp_path / "b", opset=15, max_length=32))
    bundle = load_bundle(out)
    assert bundle.manifest["export"]["opset"] == 15 and bundle.spec.max_length == 32
    assert {o.domain: o.version for o in onnx.load(str(out / "model.onnx")).opset_import}[""] == 15
    assert len(bundle.tokenizer().encode("word " * 100).ids) == 32
    assert [1, 32] in bundle.variants["fp32"]["parity"]["sweep_shapes"]


def test_an_exporter_crash_is_a_typed_error_and_leaves_nothing(tiny_checkpoint_factory, tmp_path, monkeypatch):
    import torch

    from docscore.errors import ExportError

    def boom(*a, **k):
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", boom)
    out = tmp_path / "b"
    with pytest.raises(ExportError, match="frobnicate.*--exporter dynamo"):
        export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=out))
    assert list(tmp_path.iterdir()) == []


def test_the_gate_texts_travel_with_the_model_and_never_come_from_the_working_folder(tiny_checkpoint_factory,
                                                                                      tmp_path, caplog,
                                                                                      monkeypatch):
    import shutil

    from docscore import gate_texts
    from docscore.export import verify_bundle

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_factory("bert"), ckpt)
    own = [f"my own text number {i} about invoices" for i in range(30)]
    gate_texts.write(ckpt, own, "train eval sample")
    monkeypatch.chdir(tmp_path)  # no samples/ here, and none is looked for
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b"))
    fp32 = load_bundle(out).variants["fp32"]["parity"]["data"]
    assert fp32["rows"] == 30 and "gate_texts.json" in load_bundle(out).variants["fp32"]["parity"]["data_source"]
    assert gate_texts.read(out)[0] == own  # the bundle keeps them: verify re-runs the same gate
    report = verify_bundle(out, ckpt)
    assert report["passed"] and report["variants"]["fp32"]["parity"]["data"]["rows"] == 30
    (ckpt / "gate_texts.json").unlink()  # a model that carries none: built-in texts, loudly
    out2 = export_bundle(ckpt, ExportOptions(output=tmp_path / "b2"))
    assert load_bundle(out2).variants["fp32"]["parity"]["data_source"] == "built-in texts"
    assert "carries no gate_texts.json" in caplog.text and "pass --verify-data" in caplog.text


def test_calibration_data_has_its_own_text_column(tiny_checkpoint_factory, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    calib = tmp_path / "archive.parquet"
    pq.write_table(pa.table({"content": [f"my parcel {i} is late again, where is the courier" for i in range(40)]}),
                   calib)
    out = export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(
        output=tmp_path / "b", quantize="int8", calibration_data=calib, calibration_text_column="content",
        tolerances={"int8": {"min_label_agreement": 0.5}}))  # one repeated sentence calibrates a random body badly
    calibration = load_bundle(out).variants["int8"]["quantization"]["calibration"]
    assert calibration["rows"] == 40 and calibration["source"] == str(calib)


@pytest.mark.parametrize("invariant", [True, False], ids=["invariant", "batch-dependent"])
def test_fp16_on_cuda_is_invariance_checked_on_the_cuda_session(tiny_checkpoint_factory, tmp_path, monkeypatch,
                                                                invariant):
    """Where export gates fp16 on CUDA, the invariance check runs on that session too, and a failure there is
    refused like on the CPU (the GPU is simulated: parity and invariance on "cuda" are stand-ins that record it)."""
    from docscore.export import exporter

    real_gate, real_invariance, seen = exporter.run_gate, exporter.check_invariance, []

    def gate(name, path, reference, tol, spec, threads, device="cpu", **rt):
        if device != "cuda":
            return real_gate(name, path, reference, tol, spec, threads, device, **rt)
        return {"passed": True, "failures": [], "device": "cuda"}

    def invariance(bundle, variant, texts, **kw):
        if kw.get("device", "cpu") != "cuda":
            return real_invariance(bundle, variant, texts, **kw)
        seen.append(variant)
        return {"passed": invariant, "bit_identical": invariant, "max_abs_score_diff": 0.0 if invariant else 3e-3,
                "failures": [] if invariant else ["scores depend on batching: max |Δscore| 0.003 > 1e-06"]}

    monkeypatch.setattr(exporter, "cuda_available", lambda: True)
    monkeypatch.setattr(exporter, "run_gate", gate)
    monkeypatch.setattr(exporter, "check_invariance", invariance)
    opts = ExportOptions(output=tmp_path / "b", fp16=True)
    if invariant:
        fp16 = load_bundle(export_bundle(tiny_checkpoint_factory("bert"), opts)).variants["fp16"]
        assert fp16["verified"] is True and fp16["invariance"]["bit_identical"] is True
    else:
        with pytest.raises(ParityError, match="(?s)fp16: scores depend on batching.*--allow-batch-dependent"):
            export_bundle(tiny_checkpoint_factory("bert"), opts)
        assert not (tmp_path / "b").exists()
    assert seen == ["fp16"]
