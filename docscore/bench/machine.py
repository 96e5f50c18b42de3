"""What the numbers were measured on: CPU model, SIMD, physical cores, base clock, nominal peaks per precision,
GPU, versions. See :mod:`docscore.runtime.cpu` (what the OS says) and :mod:`docscore.bench.peaks` (the peaks)."""

from __future__ import annotations

import platform
import shutil
import subprocess

from docscore.runtime.cpu import allowed_cpus, base_clock, physical_cores, read_cpuinfo
from docscore.bench.peaks import ops_per_cycle, peaks_gflops

SIMD_PREFIXES = ("avx", "fma", "amx")
VERSIONED = ("onnxruntime", "openvino", "numpy", "tokenizers", "pyarrow", "torch", "transformers", "onnx")


def cpu_facts(procs: list[dict[str, str]], allowed: set[int], cpufreq_dir=None) -> dict:
    """Model, vendor, family, flags, logical CPUs, physical cores, base clock and peaks of the allowed CPUs."""
    first = next((p for p in procs if p.get("processor", "").isdigit() and int(p["processor"]) in allowed),
                 procs[0] if procs else {})
    flags = first.get("flags", "").split()
    try:
        family = int(first["cpu family"])
    except (KeyError, ValueError):
        family = None
    try:
        mhz = float(first["cpu MHz"])
    except (KeyError, ValueError):
        mhz = None
    model = first.get("model name") or platform.processor() or platform.machine()
    vendor = first.get("vendor_id", "")
    cores, cores_source = physical_cores(procs, allowed)
    ghz, clock_source = base_clock(model, mhz, cpufreq_dir)
    per_cycle = ops_per_cycle(flags, vendor, family)
    peaks = peaks_gflops(per_cycle, cores, ghz)
    return {
        "cpu": model,
        "vendor": vendor,
        "family": family,
        "logical_cpus": len(allowed),
        "cores": cores,
        "cores_source": cores_source,
        "ghz": round(ghz, 3) if ghz else None,
        "clock_source": clock_source,
        "current_mhz": mhz,
        "simd": [f for f in flags if f.startswith(SIMD_PREFIXES) or f in ("f16c", "sse4_2")],
        "ops_per_cycle_per_core": per_cycle,
        "peak_gflops": peaks,
        "peak_fp32_gflops": peaks["fp32"],
    }


def machine_info() -> dict:
    info = cpu_facts(read_cpuinfo(), allowed_cpus())
    versions = {"python": platform.python_version()}
    for mod in VERSIONED:
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional modules
            pass
    info.update(gpu=gpu_name(), os=platform.platform(), versions=versions)
    return info


def peak_for(machine: dict, precision: str, threads: int | None) -> float | None:
    """The nominal peak of ``precision`` on the physical cores a run can use: ``min(threads, cores)``."""
    peak = (machine.get("peak_gflops") or {}).get(precision)
    cores = machine.get("cores") or 0
    if not peak or not cores:
        return None
    used = min(threads, cores) if threads else cores
    return peak * used / cores


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
