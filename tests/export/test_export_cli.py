"""``docscore export-onnx`` / ``export-onnx`` / ``docscore verify``: exit codes and what is left on disk."""

from __future__ import annotations

import json

import pytest

from docscore.cli import export_onnx_main, main
from docscore.errors import ConfigError
from docscore.export.options import ExportOptions, parse_tolerance_overrides


def test_cli_exports_a_verified_bundle(tiny_checkpoint_factory, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["export-onnx", str(tiny_checkpoint_factory("distilbert")), "--output", str(out), "--optimize"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fp32" in text and "optimized" in text and "fusions:" in text
    manifest = json.loads((out / "docscore.json").read_text())
    assert manifest["variants"]["optimized"]["verified"]


def test_standalone_export_onnx_script_is_the_same_command(tiny_checkpoint_factory, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert export_onnx_main([str(tiny_checkpoint_factory("bert")), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fp32"]["verified"] is True


def test_cli_gate_failure_exits_3_and_writes_nothing(tiny_checkpoint_factory, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["export-onnx", str(tiny_checkpoint_factory("bert")), "-o", str(out),
               "--tolerance", "fp32.atol=0", "--tolerance", "fp32.rtol=0"])  # impossible: demands bit equality
    assert rc == 3
    assert "parity gate failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary directory


def test_verify_cli_refuses_a_tampered_bundle(tiny_checkpoint_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint_factory("bert")
    out = tmp_path / "bundle"
    assert main(["export-onnx", str(ckpt), "-o", str(out)]) == 0
    assert main(["verify", "--model", str(out), "--checkpoint", str(ckpt)]) == 0
    assert "parity ok" in capsys.readouterr().out
    tok = out / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"max_length": 64', '"max_length": 128'))
    assert main(["verify", "--model", str(out)]) == 4  # BundleError: bad bundle (README exit codes)
    err = capsys.readouterr().err
    assert "tokenizer.json: sha256 mismatch" in err and "Re-export" in err


def test_verify_cli_on_a_missing_bundle(tmp_path, capsys):
    assert main(["verify", "--model", str(tmp_path / "nope")]) == 4
    assert "does not exist" in capsys.readouterr().err


def test_tolerance_overrides_parse_and_validate():
    assert parse_tolerance_overrides(["fp32.atol=1e-5", "int8.min_label_agreement=0.98", "fp16.atol=none"]) == {
        "fp32": {"atol": 1e-5}, "int8": {"min_label_agreement": 0.98}, "fp16": {"atol": None}}
    for bad in ["atol=1", "fp64.atol=1", "fp32.speed=1", "fp32.atol=abc", "int8.min_label_agreement=none"]:
        with pytest.raises(ConfigError):
            parse_tolerance_overrides([bad])
    opts = ExportOptions(output="b", tolerances={"int8": {"min_label_agreement": 0.95}})
    assert opts.tolerance("int8").min_label_agreement == 0.95 and opts.tolerance("int8").atol is None
    assert opts.tolerance("fp32").atol == 1e-4


def test_options_refuse_a_batch_one_trace():
    with pytest.raises(ConfigError, match="trace_shape"):
        ExportOptions(output="b", trace_shape=(1, 16))
    with pytest.raises(ConfigError, match="exporter"):
        ExportOptions(output="b", exporter="torchscript")
