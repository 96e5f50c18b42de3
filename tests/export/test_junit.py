"""``docscore verify --junit-xml``: a well-formed JUnit report, one test case per variant and check, failures
marked, written whether verify passes or fails."""

from __future__ import annotations

import json
import shutil
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from docscore.bundle import MANIFEST_NAME
from docscore.cli import main

VARIANT_CHECKS = ["hashes", "parity", "invariance"]


def cases(path: Path) -> dict[tuple[str, str], ET.Element]:
    xml.dom.minidom.parse(str(path))  # well-formed
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    found = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert len(found) == len(list(suite.iter("testcase")))  # one case per (variant, check)
    assert int(suite.get("tests")) == len(found)
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in found.values())
    assert int(suite.get("skipped")) == sum(c.find("skipped") is not None for c in found.values())
    return found


def status(case: ET.Element) -> str:
    return "failed" if case.find("failure") is not None else "skipped" if case.find("skipped") is not None else "passed"


@pytest.fixture
def two_variants(tiny_bundle_factory, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_factory(variants=("fp32", "optimized")), dst)
    return dst


def test_junit_report_has_one_case_per_variant_and_check(two_variants, tiny_checkpoint_factory, tmp_path):
    report = tmp_path / "ci" / "verify.xml"
    assert main(["verify", "--model", str(two_variants), "--checkpoint", str(tiny_checkpoint_factory("bert")),
                 "--junit-xml", str(report)]) == 0
    found = cases(report)
    expected = {("docscore.verify.bundle", c) for c in ("manifest", "files", "checkpoint_spec")}
    expected |= {(f"docscore.verify.{v}", c) for v in ("fp32", "optimized") for c in VARIANT_CHECKS}
    assert set(found) == expected
    for (cls, name), case in found.items():
        want = "skipped" if name == "invariance" and "invariance" not in _variant(two_variants, cls) else "passed"
        assert status(case) == want, (cls, name)


def _variant(bundle: Path, classname: str) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text())["variants"][classname.rsplit(".", 1)[1]]


def test_junit_marks_a_changed_variant_file_and_still_writes(two_variants, tmp_path):
    (two_variants / _variant(two_variants, "x.optimized")["file"]).write_bytes(b"changed")
    report = tmp_path / "verify.xml"
    assert main(["verify", "--model", str(two_variants), "--junit-xml", str(report)]) == 4
    found = cases(report)
    assert status(found["docscore.verify.optimized", "hashes"]) == "failed"
    assert "sha256 mismatch" in found["docscore.verify.optimized", "hashes"].find("failure").get("message")
    assert status(found["docscore.verify.fp32", "hashes"]) == "passed"
    assert status(found["docscore.verify.bundle", "files"]) == "failed"
    assert status(found["docscore.verify.bundle", "manifest"]) == "passed"
    assert status(found["docscore.verify.optimized", "parity"]) == "skipped"  # recorded results no longer apply


def test_junit_marks_parity_and_invariance_failures(two_variants, tiny_checkpoint_factory, tmp_path):
    from test_export_bundle import _reweighted

    m = json.loads((two_variants / MANIFEST_NAME).read_text())
    m["variants"]["fp32"]["invariance"] = {"passed": True}
    m["variants"]["optimized"]["invariance"] = {"passed": False, "failures": ["scores change with batch companions"]}
    (two_variants / MANIFEST_NAME).write_text(json.dumps(m))
    assert main(["verify", "--model", str(two_variants), "--rehash"]) == 3  # a recorded failure fails verify; nothing resealed
    assert main(["verify", "--model", str(two_variants)]) == 4  # still the edited, unsealed-by-digest manifest
    from docscore.bundle import reseal_manifest

    reseal_manifest(two_variants)
    report = tmp_path / "verify.xml"
    assert main(["verify", "--model", str(two_variants), "--junit-xml", str(report)]) == 3  # the recorded results
    found = cases(report)
    assert status(found["docscore.verify.fp32", "invariance"]) == "passed"
    inv = found["docscore.verify.optimized", "invariance"].find("failure")
    assert inv is not None and "batch companions" in inv.get("message")
    ckpt = _reweighted(tiny_checkpoint_factory("bert"))  # same spec, other weights: parity must fail
    assert main(["verify", "--model", str(two_variants), "--checkpoint", str(ckpt), "--junit-xml", str(report)]) == 3
    found = cases(report)
    for v in ("fp32", "optimized"):
        assert status(found[f"docscore.verify.{v}", "invariance"]) == "passed"  # re-run here, not read back
        assert status(found[f"docscore.verify.{v}", "parity"]) == "failed"
        assert "logit diff" in found[f"docscore.verify.{v}", "parity"].find("failure").text
        assert status(found[f"docscore.verify.{v}", "hashes"]) == "passed"


def test_junit_for_a_bundle_that_cannot_be_read(tmp_path):
    report = tmp_path / "verify.xml"
    assert main(["verify", "--model", str(tmp_path / "nope"), "--junit-xml", str(report)]) == 4
    found = cases(report)
    assert list(found) == [("docscore.verify.bundle", "manifest")]
    assert "does not exist" in found["docscore.verify.bundle", "manifest"].find("failure").get("message")
