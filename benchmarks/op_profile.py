"""Where an OpenVINO variant's time goes, per operation type, and how close its matrix multiplies get to the
nominal peak of their precision (the "share of peak" column of `docscore bench throughput`, taken apart).

    python benchmarks/op_profile.py --model BUNDLE [--variant int8 --variant bf16 --variant fp32] \\
        [--checkpoint CKPT] [--batch 32] [--seq 256] [--reps 5] [--threads N]

OpenVINO's per-node counters (``PERF_COUNT``) on one batch of ``--batch`` rows of exactly ``--seq`` real tokens,
one stream on ``--threads`` threads, the median of ``--reps`` runs after one warm-up. ``fp32`` is the bundle's
``model.onnx`` run by OpenVINO in f32 (the peer row). Dense GFLOP/s = the dense layers' FLOPs (2·K·N per token
for every weight matrix, `docscore/bench/stats.py`) over the time of the ``FullyConnected`` nodes; attention
GFLOP/s = QKᵀ and A·V FLOPs over the attention nodes (``Subgraph``: OpenVINO's fused multi-head attention, or
``MatMul``). Peaks are the ones `docscore bench` uses (`docscore/bench/peaks.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

from docscore.bench.latency import make_feed
from docscore.bench.variants import body_dims
from docscore.bench.machine import machine_info, peak_for
from docscore.bench.peaks import variant_precision
from docscore.bench.stats import attention_flops_per_token, linear_flops_per_token
from docscore.bundle import load_bundle

ATTENTION_TYPES = ("Subgraph", "MatMul", "ScaledDotProductAttention")
AMX = {"amx_tile", "amx_bf16", "amx_int8", "amx_fp16"}


def is_dense(node_type: str) -> bool:
    """FullyConnected and its quantised forms (``FullyConnectedQuantizedLegacy`` in OpenVINO 2026)."""
    return node_type.startswith("FullyConnected")


def vector_peak(machine: dict, precision: str, threads: int) -> float | None:
    """The nominal peak of ``precision`` on the AVX-512/AVX2 units alone (AMX left out): what the AMX peak is
    compared against."""
    from docscore.bench.peaks import ops_per_cycle

    flags = set(machine.get("simd") or [])
    if not flags & AMX or not machine.get("ghz"):
        return None
    per_cycle = ops_per_cycle(flags - AMX, machine.get("vendor", ""), machine.get("family")).get(precision)
    cores = min(threads, machine.get("cores") or threads)
    return cores * machine["ghz"] * per_cycle if per_cycle else None


def profile(path, precision: str, feed: dict, threads: int, reps: int) -> tuple[dict[str, float], float]:
    """Median milliseconds per node type over ``reps`` runs, and the median wall time of a run."""
    import time

    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
        "PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": "NO"})
    names = {p.get_any_name() for p in compiled.inputs}
    request = compiled.create_infer_request()
    feed = {k: v for k, v in feed.items() if k in names}
    request.infer(feed)  # warm-up
    per_type: dict[str, list[float]] = defaultdict(list)
    walls = []
    for _ in range(reps):
        t = time.perf_counter()
        request.infer(feed)
        walls.append((time.perf_counter() - t) * 1e3)
        totals: dict[str, float] = defaultdict(float)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                totals[info.node_type] += info.real_time.total_seconds() * 1e3
        for k in set(per_type) | set(totals):
            per_type[k].append(totals.get(k, 0.0))
    return {k: statistics.median(v) for k, v in per_type.items()}, statistics.median(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="bundle directory")
    ap.add_argument("--variant", action="append", default=None,
                    help="int8, bf16 or fp32 (OpenVINO f32 on model.onnx); repeatable (default: all it holds)")
    ap.add_argument("--checkpoint", default=None, help="for the body's size when the manifest lacks it")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="default: the physical cores")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    bundle = load_bundle(args.model)
    machine = machine_info()
    threads = args.threads or machine.get("cores") or 1
    hidden, layers = body_dims(bundle, args.checkpoint) or (0, 0)
    tokens = args.batch * args.seq
    dense = linear_flops_per_token(bundle.variant_path("fp32")) * tokens
    attention = attention_flops_per_token(args.seq, hidden, layers) * tokens if layers and hidden else None
    feed = make_feed(bundle.tokenizer(), bundle.spec.input_names, args.batch, args.seq)
    wanted = args.variant or [v for v in ("int8", "bf16", "fp32") if v == "fp32" or v in bundle.variants]
    report = {"machine": {k: machine.get(k) for k in ("cpu", "cores", "ghz", "clock_source", "peak_gflops")},
              "batch": args.batch, "seq": args.seq, "threads": threads, "variants": {}}
    for name in wanted:
        if name == "fp32":
            path, precision, peak_precision = bundle.variant_path("fp32"), "f32", "fp32"
        else:
            entry = bundle.variants.get(name)
            if entry is None or entry.get("runtime") != "openvino":
                print(f"skipped {name}: not an OpenVINO variant of this bundle", file=sys.stderr)
                continue
            path, precision, peak_precision = bundle.variant_path(name), entry["precision"], variant_precision(
                name, entry)
        times, wall = profile(path, precision, feed, threads, args.reps)
        total = sum(times.values())
        peak = peak_for(machine, peak_precision, threads)
        fc = sum(v for k, v in times.items() if is_dense(k))
        att = sum(times.get(t, 0.0) for t in ATTENTION_TYPES)
        vector = vector_peak(machine, peak_precision, threads)
        vector = vector if vector and vector != peak else None  # fp32: the same units
        row = {"precision": peak_precision, "wall_ms": wall, "profiled_ms": total, "ms_by_type": times,
               "peak_gflops": peak, "vector_peak_gflops": vector,
               "dense_gflops": dense / fc / 1e6 if fc else None,
               "attention_gflops": attention / att / 1e6 if att and attention else None,
               "whole_model_gflops": (dense + (attention or 0)) / wall / 1e6}
        for key in ("dense", "attention", "whole_model"):
            g = row[f"{key}_gflops"]
            row[f"{key}_pct_of_peak"] = 100 * g / peak if g and peak else None
        row["dense_pct_of_vector_peak"] = 100 * row["dense_gflops"] / vector if vector and row["dense_gflops"] else None
        report["variants"][name] = row
    print(f"{machine.get('cpu')}, {threads} thread(s) at {machine.get('ghz')} GHz, batch {args.batch} x {args.seq} "
          f"tokens, one stream, median of {args.reps}\n")
    print("| variant | precision (peak GFLOP/s) | wall ms | dense layers: % time, GFLOP/s, % of peak (% of the "
          "AVX-512 peak) | attention: % time, GFLOP/s | everything else: % time (top 3 op types) | whole model % "
          "of peak |")
    print("|---|---|---:|---|---|---|---:|")

    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    for name, r in report["variants"].items():
        t = r["ms_by_type"]
        total = r["profiled_ms"] or 1.0
        fc = sum(v for k, v in t.items() if is_dense(k))
        att = sum(t.get(k, 0.0) for k in ATTENTION_TYPES)
        rest = sorted(((v, k) for k, v in t.items() if not is_dense(k) and k not in ATTENTION_TYPES), reverse=True)
        vec = f" ({pct(r['dense_pct_of_vector_peak'])} %)" if r["dense_pct_of_vector_peak"] else ""
        top = ", ".join(f"{k} {100 * v / total:.0f} %" for v, k in rest[:3])
        print(f"| {name} | {r['precision']} ({pct(r['peak_gflops'])}) | {r['wall_ms']:.0f} | "
              f"{100 * fc / total:.0f} %, {pct(r['dense_gflops'])}, **{pct(r['dense_pct_of_peak'])} %**{vec} | "
              f"{100 * att / total:.0f} %, {pct(r['attention_gflops'])} | "
              f"{100 * (total - fc - att) / total:.0f} % ({top}) | {pct(r['whole_model_pct_of_peak'])} % |")
    if args.json:
        from pathlib import Path

        from docscore.storage import write_bytes

        write_bytes(None, str(Path(args.json)), (json.dumps(report, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
