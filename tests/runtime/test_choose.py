"""Promises about which variant runs and where: the default is chosen once per CPU and then stays; variants a host
cannot run as verified are refused when scoring, not silently run another way."""

from __future__ import annotations

import pyarrow as pa
import pytest

from docscore.batch import Scorer, ScoreOptions
from docscore.runtime import choose
from docscore.bundle import load_bundle
from docscore.errors import DeviceError


@pytest.fixture(scope="module")
def two_candidates(tiny_bundle_factory):
    return load_bundle(tiny_bundle_factory(variants=("fp32", "optimized")))


def test_the_default_is_measured_once_per_cpu_then_stays(two_candidates, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCSCORE_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    speeds = iter([{"fp32": 10.0, "optimized": 20.0}, {"fp32": 30.0, "optimized": 5.0}])

    def fake_measure(bundle, names, threads=None, rounds=5):
        calls.append(sorted(names))
        return next(speeds)

    monkeypatch.setattr(choose, "measure", fake_measure)
    monkeypatch.setattr(choose, "cpu_signature", lambda: "a CPU the export never saw | avx2 | 2 cpus")
    first = choose.ranking(two_candidates)
    assert (first["chosen"], first["source"]) == ("optimized", "measured now on this CPU") and len(calls) == 1
    again = choose.ranking(two_candidates)  # another night: no timing noise can flip the default
    assert again["chosen"] == "optimized" and again["source"].startswith("measured on this CPU earlier")
    assert len(calls) == 1 and choose.choose_variant(two_candidates) == "optimized"
    monkeypatch.setattr(choose, "cpu_signature", lambda: "another CPU | avx512f | 2 cpus")
    moved = choose.ranking(two_candidates)  # the same bundle on another CPU is timed there
    assert (moved["chosen"], moved["source"]) == ("fp32", "measured now on this CPU") and len(calls) == 2


def test_an_openvino_variant_with_device_cuda_is_refused(tiny_bundle_factory):
    bundle = tiny_bundle_factory(variants=("fp32", "int8"))
    with pytest.raises(DeviceError, match="OpenVINO variant, which docscore runs on the CPU only"):
        Scorer(bundle, ScoreOptions(variant="int8", device="cuda", threads=1)).load()


def test_a_bf16_variant_is_refused_when_scoring_on_a_cpu_without_native_bf16(tiny_bundle_factory, monkeypatch):
    from docscore.runtime import ov

    if not ov.native_bf16():
        pytest.skip("no native bf16 on this CPU: a bf16 bundle cannot be exported here (refusal tested at export)")
    bundle = tiny_bundle_factory(bf16=True)
    Scorer(bundle, ScoreOptions(variant="bf16", threads=1))(pa.table({"text": ["a parcel never arrived"]}))
    monkeypatch.setattr(ov, "native_bf16", lambda: False)  # the same bundle on a CPU without it
    with pytest.raises(DeviceError, match="no native bf16"):
        Scorer(bundle, ScoreOptions(variant="bf16", threads=1)).load()
    assert "bf16" in choose.ranking(load_bundle(bundle))["excluded"]  # and never the default there
