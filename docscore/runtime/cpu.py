"""What the CPU is, read from the OS: the processors of ``/proc/cpuinfo``, the physical cores this process may
use and the base clock, each with where it came from.

Physical cores, not logical CPUs: two hyperthreads of one core share its FMA units, so counting both would
double the peak. Base clock, not the current ``cpu MHz``: the current value is whatever the core ran at when it was
read (idle or boosting), and a peak computed from it moves from run to run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CPUFREQ = Path("/sys/devices/system/cpu/cpu{n}/cpufreq")
# sysfs files holding a base (nominal) clock in kHz, best first, with how the report names each
BASE_CLOCK_FILES = (
    ("base_frequency", "sysfs base_frequency (base clock)"),
    ("amd_pstate_nominal_freq", "sysfs amd_pstate_nominal_freq (base clock)"),
    ("bios_limit", "sysfs bios_limit (firmware limit, may exceed the base clock)"),
    ("cpuinfo_max_freq", "sysfs cpuinfo_max_freq (may be the boost clock: the peak is high, never flattering)"),
)
MODEL_CLOCK = re.compile(r"@\s*([0-9]+(?:\.[0-9]+)?)\s*GHz", re.IGNORECASE)


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """One dict per ``processor`` block of ``/proc/cpuinfo`` text (keys and values stripped)."""
    procs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                procs.append(current)
                current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        procs.append(current)
    return procs


def read_cpuinfo(path: str | os.PathLike = "/proc/cpuinfo") -> list[dict[str, str]]:
    try:
        return parse_cpuinfo(Path(path).read_text())
    except OSError:
        return []


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(procs: list[dict[str, str]], allowed: set[int]) -> tuple[int, str]:
    """(physical cores among the ``allowed`` logical CPUs, how they were counted).

    A core is a unique ``(physical id, core id)`` pair; where ``/proc/cpuinfo`` lacks those fields (some VMs,
    non-x86) every allowed logical CPU counts as a core, and the second value says so.
    """
    seen = set()
    for p in procs:
        try:
            n = int(p["processor"])
        except (KeyError, ValueError):
            continue
        if n not in allowed:
            continue
        if "core id" not in p:
            return len(allowed), "logical CPUs (no core id in /proc/cpuinfo)"
        seen.add((p.get("physical id", "0"), p["core id"]))
    if not seen:
        return len(allowed), "logical CPUs (no /proc/cpuinfo)"
    return len(seen), "unique (physical id, core id) among the allowed CPUs"


def _read_khz(path: Path) -> float | None:
    try:
        value = float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return value if value > 0 else None


def base_clock(model_name: str, current_mhz: float | None, cpufreq_dir: str | os.PathLike | None = None
               ) -> tuple[float | None, str]:
    """(base clock in GHz, where it came from): a sysfs base/nominal frequency, else the ``@ x.xGHz`` of the
    model name, else the current ``cpu MHz`` of ``/proc/cpuinfo`` — which the source then says is not a base
    clock."""
    root = Path(cpufreq_dir) if cpufreq_dir is not None else Path(str(CPUFREQ).format(n=0))
    for name, source in BASE_CLOCK_FILES:
        khz = _read_khz(root / name)
        if khz:
            return khz / 1e6, source
    m = MODEL_CLOCK.search(model_name or "")
    if m:
        return float(m.group(1)), "model name (@ GHz)"
    if current_mhz:
        return current_mhz / 1000.0, ("current cpu MHz from /proc/cpuinfo: no base clock exposed (no cpufreq "
                                      "in sysfs, none in the model name); the peak moves with it")
    return None, "unknown"
