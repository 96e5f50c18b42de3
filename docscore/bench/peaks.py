"""Nominal peak throughput per precision (fp32, bf16, int8) from the CPU's ISA flags, vendor and family.

A peak is ``physical cores × base clock × ops per cycle per core``; one multiply-add counts as 2 ops in every
precision (as the useful-FLOPs count of the model does). Ops per cycle per core, and the assumptions behind them:

- **fp32**: two FMA pipes of the widest vector unit. AVX2+FMA: 2 × 8 lanes × 2 = 32. AVX-512: Intel 64 (two
  512-bit FMA units; Xeons with one unit reach 32, which the flags cannot tell — the peak is then high, never
  flattering); AMD Zen 4 (family 0x19) 32, because it executes 512-bit ops as two 256-bit halves; Zen 5 (family
  0x1A) 64, full-width (mobile Zen 5 double-pumps like Zen 4: again a high peak). AVX without FMA 16, SSE 8.
- **bf16**: ``avx512_bf16`` (``VDPBF16PS``, two bf16 products per fp32 lane) 2 × fp32; AMX (``amx_bf16``) 1024
  (one 16×16×32 tile multiply per 16 cycles, Sapphire Rapids). No native bf16: no peak (``None``) — OpenVINO
  would run such a variant in fp32, and docscore refuses it.
- **int8**: AMX (``amx_int8``) 2048; VNNI (``avx512_vnni`` or ``avx_vnni``: ``VPDPBUSD``, four u8×s8 products per
  int32 lane in one instruction) 4 × fp32; without VNNI the ``VPMADDUBSW``/``VPMADDWD`` pair gives about 2 × fp32.
"""

from __future__ import annotations

PRECISIONS = ("fp32", "bf16", "int8")
AMD_ZEN5_FAMILY = 0x1A


def fp32_ops_per_cycle(flags, vendor: str = "", family: int | None = None) -> int:
    """FP32 FLOPs per cycle per core (see the module docstring)."""
    flags = set(flags)
    fma = "fma" in flags
    if "avx512f" in flags and fma:
        if vendor == "AuthenticAMD":
            return 64 if family is not None and family >= AMD_ZEN5_FAMILY else 32
        return 64
    if "avx2" in flags and fma:
        return 32
    if "avx" in flags:
        return 16
    return 8


def ops_per_cycle(flags, vendor: str = "", family: int | None = None) -> dict[str, int | None]:
    """Ops per cycle per core for each of :data:`PRECISIONS`; ``None`` where the CPU has no native support."""
    flags = set(flags)
    fp32 = fp32_ops_per_cycle(flags, vendor, family)
    if "amx_bf16" in flags:
        bf16 = 1024
    elif "avx512_bf16" in flags:
        bf16 = 2 * fp32
    else:
        bf16 = None
    if "amx_int8" in flags:
        int8 = 2048
    elif flags & {"avx512_vnni", "avx_vnni"}:
        int8 = 4 * fp32
    else:
        int8 = 2 * fp32
    return {"fp32": fp32, "bf16": bf16, "int8": int8}


def peaks_gflops(per_cycle: dict[str, int | None], cores: int, ghz: float | None) -> dict[str, float | None]:
    """Nominal GFLOP/s (GOP/s for int8) per precision on ``cores`` physical cores at ``ghz``."""
    return {p: round(cores * ghz * n, 1) if n and ghz else None for p, n in per_cycle.items()}


def variant_precision(name: str, entry: dict | None = None) -> str:
    """The precision a variant's matrix multiplies run in — ``fp32``, ``bf16``, ``int8`` or ``fp16`` — from its
    manifest entry (``dtype``, ``precision``), else from its name (bundles written before those fields)."""
    entry = entry or {}
    dtype, precision = entry.get("dtype", ""), entry.get("precision", "")
    if dtype == "int8" or (not dtype and "int8" in name):
        return "int8"
    if dtype == "float16" or precision == "f16" or (not dtype and name == "fp16"):
        return "fp16"
    if dtype == "bfloat16" or precision == "bf16" or (not dtype and "bf16" in name):
        return "bf16"
    return "fp32"


# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by a substring of the name
# ``nvidia-smi`` reports; fp32 is the CUDA-core peak (what fp32 with TF32 off runs on). The first match wins, so
# more specific names come first. A card not listed has no peak (``None``), never a guessed one.
GPU_PEAKS_TFLOPS = (
    ("H200", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "fp16": 756.5, "bf16": 756.5}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}),
    ("L40S", {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0}),
    ("A10G", {"fp32": 31.2, "tf32": 35.0, "fp16": 70.0, "bf16": 70.0}),
    ("T4", {"fp32": 8.1, "fp16": 65.0}),
)


def gpu_peak_gflops(name: str | None, precision: str) -> float | None:
    """The nominal dense peak of ``precision`` on the GPU called ``name`` (GFLOP/s), or ``None`` if unknown."""
    for key, peaks in GPU_PEAKS_TFLOPS:
        if name and key in name:
            tflops = peaks.get(precision)
            return tflops * 1000 if tflops else None
    return None
