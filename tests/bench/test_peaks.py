"""Nominal peaks per precision from ISA flags: Zen 3/4/5, Intel, AVX2-only; the precision a variant runs in."""

import pytest

from docscore.bench.peaks import fp32_ops_per_cycle, ops_per_cycle, peaks_gflops, variant_precision

AVX2 = ["sse4_2", "avx", "fma", "avx2"]
ZEN4 = AVX2 + ["avx512f", "avx512_vnni", "avx512_bf16"]
INTEL_SPR = AVX2 + ["avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]


def test_avx2_only_like_zen3():
    assert ops_per_cycle(AVX2, "AuthenticAMD", 0x19) == {"fp32": 32, "bf16": None, "int8": 64}


def test_zen4_double_pumps_avx512():
    assert ops_per_cycle(ZEN4, "AuthenticAMD", 0x19) == {"fp32": 32, "bf16": 64, "int8": 128}


def test_zen5_is_full_width():
    assert ops_per_cycle(ZEN4, "AuthenticAMD", 0x1A) == {"fp32": 64, "bf16": 128, "int8": 256}


def test_intel_avx512_and_amx():
    assert fp32_ops_per_cycle(AVX2 + ["avx512f"], "GenuineIntel", 6) == 64
    assert ops_per_cycle(AVX2 + ["avx512f", "avx512_vnni"], "GenuineIntel", 6)["int8"] == 256
    assert ops_per_cycle(INTEL_SPR, "GenuineIntel", 6) == {"fp32": 64, "bf16": 1024, "int8": 2048}
    assert ops_per_cycle(AVX2 + ["avx_vnni"], "GenuineIntel", 6)["int8"] == 128  # Alder Lake: VNNI on AVX2


def test_old_simd():
    assert fp32_ops_per_cycle(["sse4_2", "avx"]) == 16
    assert fp32_ops_per_cycle(["sse4_2"]) == 8


def test_peaks_scale_with_cores_and_clock():
    peaks = peaks_gflops({"fp32": 32, "bf16": None, "int8": 64}, cores=2, ghz=2.5)
    assert peaks == {"fp32": 160.0, "bf16": None, "int8": 320.0}
    assert peaks_gflops({"fp32": 32}, cores=2, ghz=None) == {"fp32": None}


@pytest.mark.parametrize("name, entry, want", [
    ("fp32", {"dtype": "float32", "runtime": "onnxruntime", "precision": "f32"}, "fp32"),
    ("optimized", {"dtype": "float32"}, "fp32"),
    ("bf16", {"dtype": "bfloat16", "runtime": "openvino", "precision": "bf16"}, "bf16"),
    ("int8", {"dtype": "int8", "runtime": "openvino", "precision": "bf16"}, "int8"),  # int8 matmuls, bf16 rest
    ("int8-dynamic", {"dtype": "int8", "precision": "f32"}, "int8"),
    ("fp16", {"dtype": "float16", "precision": "f16"}, "fp16"),
    ("int8", {}, "int8"),  # a bundle written before dtype/precision
    ("fp32-openvino", {"runtime": "openvino", "precision": "f32"}, "fp32"),
])
def test_variant_precision(name, entry, want):
    assert variant_precision(name, entry) == want


@pytest.mark.parametrize("name, precision, want", [
    ("NVIDIA H200", "fp16", 989_400.0), ("NVIDIA H100 80GB HBM3", "bf16", 989_400.0),
    ("NVIDIA H100 PCIe", "fp16", 756_500.0), ("NVIDIA H200", "fp32", 66_900.0),
    ("Tesla T4", "bf16", None), ("Some Future GPU", "fp16", None), (None, "fp16", None)])
def test_gpu_peaks_come_from_the_datasheet_or_not_at_all(name, precision, want):
    from docscore.bench.peaks import gpu_peak_gflops

    assert gpu_peak_gflops(name, precision) == want
