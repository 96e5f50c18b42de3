"""Latency: p50/p95/p99 per batch size × sequence length, PyTorch eager and each bundle variant, one run."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from docscore.bench.machine import machine_info, peak_for
from docscore.bench.peaks import variant_precision
from docscore.bench.report import new_run
from docscore.bench.stats import attention_flops_per_token, linear_flops_per_token, percentiles
from docscore.bench.variants import body_dims
from docscore.runtime.choose import cannot_run
from docscore.bundle import load_bundle
from docscore.runtime.ort import create_session

log = logging.getLogger(__name__)

# Text the synthetic inputs are cut from: real English, long enough for 512 tokens.
FILLER = (
    "The quarterly report describes shipping delays at the northern warehouse, a billing dispute with a long-standing "
    "customer, and a software update that left several users unable to sign in. Support staff answered most tickets "
    "within a day, but the backlog of refund requests grew after the price change in March. Engineers traced the "
    "login failures to an expired certificate on the authentication service and rolled out a fix the same evening. "
)


@dataclass
class LatencyOptions:
    """Options of ``docscore bench latency``.

    Args:
        bundle: the bundle directory.
        checkpoint: optional checkpoint; adds PyTorch eager rows.
        variants: bundle variants to time (default: every variant the bundle holds that runs on the device).
        batches / seqs: the grid.
        devices: ``cpu`` and, where a GPU is present, ``cuda``.
        threads: intra-op threads for ORT and torch (default: all cores).
        warmup: untimed calls per cell.
        min_reps / max_reps / seconds_per_cell: repetitions: at least ``min_reps``, then more until the cell
            has run ``seconds_per_cell`` or ``max_reps``.
    """

    bundle: str
    checkpoint: str | None = None
    variants: list[str] | None = None
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    seqs: list[int] = field(default_factory=lambda: [32, 128, 256])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    threads: int | None = None
    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 200
    seconds_per_cell: float = 3.0

    @classmethod
    def quick(cls, bundle: str, checkpoint: str | None = None, **kw) -> "LatencyOptions":
        """About a minute on 2 cores for a MiniLM-sized model."""
        base = dict(batches=[1, 8], seqs=[32, 128], warmup=1, min_reps=5, max_reps=30, seconds_per_cell=0.5)
        base.update(kw)
        return cls(bundle=bundle, checkpoint=checkpoint, **base)


def make_feed(tokenizer, input_names, batch: int, seq: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """``batch`` rows of exactly ``seq`` real tokens (special tokens included), cut from :data:`FILLER`."""
    from docscore.runtime.ort import encodings_to_feed

    tokenizer.enable_truncation(seq)
    text = FILLER * (1 + seq // 60)
    encs = tokenizer.encode_batch([text[i * 7:] for i in range(batch)])
    return encodings_to_feed(encs, input_names, pad_id, length=seq)


def time_calls(fn: Callable[[], object], opts: LatencyOptions) -> list[float]:
    for _ in range(opts.warmup):
        fn()
    samples, started = [], time.perf_counter()
    while len(samples) < opts.max_reps and (len(samples) < opts.min_reps
                                            or time.perf_counter() - started < opts.seconds_per_cell):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _variant_call(bundle, variant: str, device: str, threads: int | None) -> Callable[[dict], object]:
    """One model call of a variant on its runtime: the raw ONNX Runtime session (no batch-of-one doubling), or the
    OpenVINO engine its manifest entry names."""
    entry = bundle.variants[variant]
    if entry.get("runtime", "onnxruntime") == "onnxruntime":
        sess = create_session(bundle.variant_path(variant), device, threads)
        return lambda feed: sess.run(None, feed)
    from docscore.runtime.engine import open_engine

    engine = open_engine(bundle.variant_path(variant), runtime=entry["runtime"],
                         precision=entry.get("precision", "f32"), device=device, threads=threads,
                         output_name=bundle.spec.output_name)
    return engine.run


def run_latency(opts: LatencyOptions, progress: Callable[[str], None] | None = None) -> dict:
    bundle = load_bundle(opts.bundle)
    spec = bundle.spec
    machine = machine_info()
    doc = new_run("latency", machine, {k: v for k, v in asdict(opts).items()})
    tok = bundle.tokenizer()
    linear = linear_flops_per_token(bundle.variant_path("fp32"))
    dims = body_dims(bundle, opts.checkpoint)
    doc["settings"]["flops_per_token_linear"] = linear
    doc["skipped"] = []
    variants = []
    for v in opts.variants or list(bundle.variants):
        why = cannot_run(bundle, v, "cpu" if "cpu" in opts.devices else opts.devices[0])
        if why:
            doc["skipped"].append({"variant": v, "why": why})
            log.info("latency: skipping %s: %s", v, why)
        else:
            variants.append(v)

    def add(engine, variant, device, b, t, samples):
        st = percentiles(samples)
        flops = b * t * (linear + (attention_flops_per_token(t, *dims) if dims else 0.0))
        gflops = flops / (st["p50"] / 1000.0) / 1e9
        precision = "fp32" if engine == "pytorch" else variant_precision(variant, bundle.variants[variant])
        peak = peak_for(machine, precision, opts.threads) if device == "cpu" else None
        row = {"engine": engine, "variant": variant, "precision": precision, "device": device, "batch": b, "seq": t,
               **st, "gflops": gflops, "peak_share_pct": 100.0 * gflops / peak if peak else None}
        doc["results"].append(row)
        if progress:
            progress(f"{engine:8s} {variant:9s} {device} b={b:<3d} t={t:<4d} p50={st['p50']:.2f} ms "
                     f"p95={st['p95']:.2f} ms ({st['n']} reps)")

    max_t = min(max(opts.seqs), spec.max_length)
    seqs = sorted({min(t, max_t) for t in opts.seqs})
    for device in opts.devices:
        for variant in variants:
            call = _variant_call(bundle, variant, device, opts.threads)
            for b in opts.batches:
                for t in seqs:
                    feed = make_feed(tok, spec.input_names, b, t, bundle.pad_id)
                    add("onnx", variant, device, b, t, time_calls(lambda: call(feed), opts))
            call = None  # free this variant before the next one loads
        if opts.checkpoint:
            import torch

            from docscore.checkpoint import load_checkpoint

            if opts.threads:
                torch.set_num_threads(opts.threads)
            model, _, _, _ = load_checkpoint(opts.checkpoint, device=device)
            for b in opts.batches:
                for t in seqs:
                    feed = {k: torch.from_numpy(v).to(device)
                            for k, v in make_feed(tok, spec.input_names, b, t, bundle.pad_id).items()}

                    def call():
                        with torch.inference_mode():
                            model(**feed)
                        if device == "cuda":
                            torch.cuda.synchronize()

                    add("pytorch", "eager", device, b, t, time_calls(call, opts))
    doc["settings"]["threads_effective"] = opts.threads or machine["cores"]
    return doc
