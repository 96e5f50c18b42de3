"""Which variant ``score`` runs when ``--variant`` is not given: the fastest usable one, measured on this CPU.

A variant is a candidate when it passed its parity gate, is batch-invariant (never a ``batch_dependent`` one), its
runtime is installed and the host can run its precision (bf16 needs native bf16). Among candidates the fastest
wins, by measurement on *this* CPU: the export records each variant's speed with a CPU signature; on another CPU
the candidates are timed once here and the choice is cached (``$DOCSCORE_CACHE_DIR``, else
``~/.cache/docscore``), so a host keeps choosing the same variant night after night — a default that flipped with
timing noise would change scores between runs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from docscore import storage
from docscore.bundle import Bundle
from docscore.errors import BundleError
from docscore.runtime.cpu import read_cpuinfo

log = logging.getLogger(__name__)

# Without any measurement (a bundle exported before speeds were recorded and no timing possible): fastest first.
STATIC_ORDER = {"cpu": ("int8", "bf16", "optimized", "fp32"), "cuda": ("fp16", "optimized", "fp32")}
SPEED_BATCH = (16, 256)  # rows x tokens of the timing feed (tokens capped at the bundle's max_length)


def cpu_signature() -> str:
    """What makes two hosts' speed rankings comparable: CPU model, the ISA extensions the kernels use, CPUs."""
    procs = read_cpuinfo()
    first = procs[0] if procs else {}
    model = first.get("model name") or platform.processor() or platform.machine()
    flags = set(first.get("flags", "").split())
    isa = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"})
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} | {' '.join(isa)} | {cpus} cpus"


def cannot_run(bundle: Bundle, name: str, device: str) -> str | None:
    """Why variant ``name`` cannot run on this host at all (fp16 off CUDA, OpenVINO off the CPU or not installed,
    bf16 without native bf16), else ``None``. Benchmarks ask this; a default must also pass :func:`why_not`."""
    entry = bundle.variants.get(name, {})
    runtime = entry.get("runtime", "onnxruntime")
    if device == "cpu" and (name == "fp16" or entry.get("dtype") == "float16" or entry.get("precision") == "f16"):
        return "fp16 is for CUDA"
    if runtime == "openvino":
        from docscore.runtime import ov

        if device != "cpu":
            return "OpenVINO variants run on the CPU only"
        if not ov.available():
            return f"needs OpenVINO: {ov.INSTALL_HINT}"
        if entry.get("precision") == "bf16" and not ov.native_bf16():
            return "needs native bf16 (AVX512_BF16 or AMX); this CPU has none"
    return None


def why_not(bundle: Bundle, name: str, device: str) -> str | None:
    """Why ``name`` cannot be a default on this host, or ``None`` when it can: verified, not batch-dependent, one of
    the device's variants, and runnable here (:func:`cannot_run`)."""
    entry = bundle.variants.get(name, {})
    if not entry.get("verified"):
        return "not verified by the parity gate"
    if entry.get("batch_dependent"):
        return "batch-dependent (scores change with batch companions)"
    if device == "cuda" and name not in STATIC_ORDER["cuda"]:
        return "not a CUDA variant"
    return cannot_run(bundle, name, device)


def _cache_path(bundle: Bundle, signature: str) -> Path:
    import hashlib

    from docscore.files import cache_root

    root = cache_root()
    key = hashlib.sha256(f"{bundle.sha256}|{signature}".encode()).hexdigest()[:24]
    return root / f"variant-speed-{key}.json"


def measure(bundle: Bundle, names: list[str], threads: int | None = None, rounds: int = 5) -> dict[str, float]:
    """Sequences per second of each variant on one fixed feed (``SPEED_BATCH``): same warm-up for each, then
    ``rounds`` rounds that run every candidate once in turn, so a burst of load hits all of them alike; a
    candidate's speed is its best round."""
    from docscore.runtime.engine import open_engine
    from docscore.runtime.ort import pad_feed

    rows, tokens = SPEED_BATCH[0], min(SPEED_BATCH[1], bundle.spec.max_length)
    ids = [[bundle.pad_id + 100 + (r * 7 + t) % 1000 for t in range(tokens)] for r in range(rows)]
    feed = pad_feed(ids, [[0] * tokens] * rows, tokens, bundle.spec.input_names, bundle.pad_id)
    engines = {}
    for name in names:
        entry = bundle.variants[name]
        engines[name] = open_engine(bundle.variant_path(name), runtime=entry.get("runtime", "onnxruntime"),
                                    precision=entry.get("precision", "f32"), threads=threads,
                                    output_name=bundle.spec.output_name)
        engines[name].run(feed)
        engines[name].run(feed)  # warm-up: first-call allocations and shape compilation are not speed
    best = {name: float("inf") for name in names}
    for _ in range(rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine.run(feed)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: rows / seconds for name, seconds in best.items()}


def ranking(bundle: Bundle, device: str = "cpu", threads: int | None = None) -> dict:
    """Every variant with why it can or cannot be the default, its speed on this CPU and the choice."""
    names = list(bundle.variants)
    reasons = {n: why_not(bundle, n, device) for n in names}
    candidates = [n for n in names if reasons[n] is None]
    out = {"device": device, "cpu": cpu_signature(), "excluded": {n: r for n, r in reasons.items() if r},
           "candidates": candidates, "speed": {}, "source": "", "chosen": None}
    if not candidates:
        return out
    if device == "cuda" or len(candidates) == 1:
        order = STATIC_ORDER[device]
        out["chosen"] = min(candidates, key=lambda n: order.index(n) if n in order else len(order))
        out["source"] = "only candidate" if len(candidates) == 1 else "CUDA order"
        return out
    recorded = {n: bundle.variants[n].get("speed", {}) for n in candidates}
    if all(r.get("cpu") == out["cpu"] and r.get("seqs_per_s") for r in recorded.values()):
        out["speed"] = {n: r["seqs_per_s"] for n, r in recorded.items()}
        out["source"] = "measured at export on this CPU"
    else:
        cache = _cache_path(bundle, out["cpu"])
        try:
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):
            cached = {}
        if set(cached.get("speed", {})) >= set(candidates):
            out["speed"] = {n: cached["speed"][n] for n in candidates}
            out["source"] = f"measured on this CPU earlier ({cache})"
        else:
            out["speed"] = measure(bundle, candidates, threads)
            out["source"] = "measured now on this CPU"
            try:
                storage.write_bytes(None, cache, json.dumps({"cpu": out["cpu"], "speed": out["speed"]}).encode(),
                                    private_tmp=True)  # two runs may measure at once
            except OSError as e:
                log.warning("cannot cache the variant choice in %s (%s); the next run measures again", cache, e)
    out["chosen"] = max(candidates, key=lambda n: out["speed"].get(n, 0.0))
    return out


def choose_variant(bundle: Bundle, device: str = "cpu", threads: int | None = None) -> str:
    """The default variant for this host (see the module docstring)."""
    r = ranking(bundle, device, threads)
    if r["chosen"] is None:
        raise BundleError(f"bundle {bundle.path} holds no variant usable as a default on this host: "
                          + "; ".join(f"{n}: {why}" for n, why in r["excluded"].items())
                          + ". Pass --variant to run one explicitly.")
    speed = ", ".join(f"{n} {s:.0f}/s" for n, s in sorted(r["speed"].items(), key=lambda kv: -kv[1]))
    log.info("default variant %s (%s%s)", r["chosen"], r["source"], f": {speed}" if speed else "")
    return r["chosen"]
