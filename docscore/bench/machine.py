"""What the numbers were measured on: CPU model, SIMD, cores, GPU, versions, and a nominal FP32 peak."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess


def _cpuinfo() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": [], "mhz": None, "vendor": ""}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and info["model"] in ("", platform.machine(), platform.processor()):
                    info["model"] = value
                elif key == "flags" and not info["flags"]:
                    info["flags"] = value.split()
                elif key == "cpu MHz" and info["mhz"] is None:
                    info["mhz"] = float(value)
                elif key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value
                elif key == "cpu family":
                    info["family"] = int(value)
    except OSError:
        pass
    return info


def fp32_flops_per_cycle(flags: list[str], vendor: str = "", family: int | None = None) -> int:
    """Nominal FP32 FLOPs per cycle per core from the SIMD width, assuming two FMA pipes.

    AMD Zen 4 executes AVX-512 as two 256-bit halves, so it peaks like AVX2 (32), not 64.
    """
    fma = "fma" in flags
    if "avx512f" in flags and fma:
        if vendor == "AuthenticAMD":
            return 32
        return 64
    if "avx2" in flags and fma:
        return 32
    if "avx" in flags:
        return 16
    return 8


def machine_info() -> dict:
    cpu = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    simd = [f for f in cpu["flags"] if f.startswith(("avx", "fma", "amx")) or f in ("f16c", "sse4_2")]
    fpc = fp32_flops_per_cycle(cpu["flags"], cpu.get("vendor", ""), cpu.get("family"))
    ghz = (cpu["mhz"] or 0) / 1000.0
    versions = {"python": platform.python_version()}
    for mod in ("onnxruntime", "numpy", "tokenizers", "pyarrow", "torch", "transformers", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional modules
            pass
    return {
        "cpu": cpu["model"],
        "cores": cores,
        "ghz": round(ghz, 3),
        "simd": simd,
        "fp32_flops_per_cycle_per_core": fpc,
        "peak_fp32_gflops": round(cores * ghz * fpc, 1) if ghz else None,
        "gpu": gpu_name(),
        "os": platform.platform(),
        "versions": versions,
    }


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
