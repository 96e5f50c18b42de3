"""Throughput on a Parquet archive: the full ``score`` pipeline and model-only inference per variant, and the
plain PyTorch loop a user would write — all in one run, on the same documents.

Each measurement runs in its own Python process (``python -m docscore.bench.throughput <json>``) so that its
peak RSS is its own and no measurement warms caches for the next.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from docscore.bench.machine import machine_info
from docscore.bench.report import new_run
from docscore.bench.stats import attention_flops_per_token, linear_flops_per_token
from docscore.bundle import load_bundle

log = logging.getLogger(__name__)

TORCH_BATCH = 32  # the plain loop's fixed batch size, as a user would write it


@dataclass
class ThroughputOptions:
    """Options of ``docscore bench throughput``.

    Args:
        bundle: bundle directory.
        checkpoint: checkpoint directory; adds the plain PyTorch loop (seed model, input order, batches of 32,
            full-text tokenisation).
        inputs: Parquet files/directories; empty → generate an archive from real documentation text.
        generate: ``long`` or ``mixed`` for the generated archive.
        rows: rows of the generated archive.
        variants: bundle variants (default: every CPU variant in the bundle).
        threads: intra-op threads for ORT and torch.
        device: ``cpu`` or ``cuda``.
        text_column: the text column of the archive.
    """

    bundle: str
    checkpoint: str | None = None
    inputs: tuple[str, ...] = ()
    generate: str = "long"
    rows: int = 1000
    variants: tuple[str, ...] | None = None
    threads: int | None = None
    device: str = "cpu"
    text_column: str = "text"

    @classmethod
    def from_args(cls, args) -> "ThroughputOptions":
        rows = args.rows or (64 if args.quick else 1000)
        return cls(bundle=args.model, checkpoint=args.checkpoint, inputs=tuple(args.inputs), generate=args.generate,
                   rows=rows, variants=tuple(args.variants.split(",")) if args.variants else None,
                   threads=args.threads, device=args.device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _read_texts(inputs: list[str], column: str) -> list:
    import pyarrow.parquet as pq

    from docscore.batch.inputs import discover

    texts = []
    for shard in discover(inputs):
        texts.extend(pq.read_table(shard.path, columns=[column]).column(column).to_pylist())
    return texts


# --- the measured pipelines, each run in a fresh process -------------------------------------------------------

def _measure_score(job: dict) -> dict:
    from docscore.batch import ScoreOptions, score_files

    opts = ScoreOptions(text_column=job["text_column"], variant=job["variant"], threads=job["threads"],
                        device=job["device"], overwrite=True)
    out = Path(job["scratch"]) / f"score-{job['variant']}"
    t0 = time.perf_counter()
    summary = score_files(job["inputs"], job["bundle"], out, opts)
    seconds = time.perf_counter() - t0
    s = summary if isinstance(summary, dict) else summary.to_dict()
    return {"docs": s["rows"], "tokens": s["tokens"], "slots": s.get("slots"), "seconds": seconds,
            "pad_fraction": s.get("pad_fraction")}


def _measure_model_only(job: dict) -> dict:
    """Inference alone: the scorer's own tokenisation and batching happen first, untimed."""
    import pyarrow.parquet as pq

    from docscore.batch import ScoreOptions, Scorer
    from docscore.batch.inputs import discover

    scorer = Scorer(job["bundle"], ScoreOptions(text_column=job["text_column"], variant=job["variant"],
                                                threads=job["threads"], device=job["device"])).load()
    prepared = []
    for shard in discover(job["inputs"]):
        table = pq.read_table(shard.path, columns=[job["text_column"]])
        prepared.extend(scorer.prepare(w) for w in scorer.windows(table))
    scorer.infer(prepared[0])  # warm-up: first-call allocations are not throughput
    t0 = time.perf_counter()
    for p in prepared:
        scorer.infer(p)
    seconds = time.perf_counter() - t0
    docs = sum(p.stats.rows - p.stats.errors for p in prepared)
    tokens = sum(p.stats.tokens for p in prepared)
    slots = sum(p.stats.slots for p in prepared)
    return {"docs": docs, "tokens": tokens, "slots": slots, "seconds": seconds,
            "pad_fraction": 1 - tokens / slots if slots else 0.0}


def _measure_pytorch(job: dict) -> dict:
    """The loop a user would write: input order, fixed batches of 32, the HF tokenizer on the full text."""
    import torch

    from docscore.checkpoint import load_checkpoint

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = job["device"]
    model, tok, spec, _ = load_checkpoint(job["checkpoint"], device=device)
    max_length = job["max_length"]  # the bundle's, so both sides see the same tokens
    texts = [t for t in _read_texts(job["inputs"], job["text_column"]) if isinstance(t, str) and t.strip()]
    tokens = slots = 0
    with torch.inference_mode():
        model(**{k: v.to(device) for k, v in tok(texts[:2], padding=True, truncation=True,
                                                 max_length=max_length, return_tensors="pt").items()
                 if k in spec.input_names})  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(texts), TORCH_BATCH):
            enc = tok(texts[i:i + TORCH_BATCH], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            feed = {k: v.to(device) for k, v in enc.items() if k in spec.input_names}
            model(**feed).cpu()
            tokens += int(enc["attention_mask"].sum())
            slots += enc["attention_mask"].numel()
        seconds = time.perf_counter() - t0
    return {"docs": len(texts), "tokens": tokens, "slots": slots, "seconds": seconds,
            "pad_fraction": 1 - tokens / slots if slots else 0.0}


MEASURES = {"score": _measure_score, "model-only": _measure_model_only, "pytorch-loop": _measure_pytorch}


def _run_job(job: dict) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "docscore.bench.throughput", json.dumps(job)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {job['pipeline']} {job.get('variant')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_throughput(opts: ThroughputOptions, progress: Callable[[str], None] | None = None) -> dict:
    bundle = load_bundle(opts.bundle)
    machine = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="docscore-bench-"))
    inputs = list(opts.inputs)
    archive_name = ", ".join(inputs)
    if not inputs:
        from docscore.bench.archive import make_archive

        make_archive(scratch / "archive", opts.rows, opts.generate, shards=2)
        inputs = [str(scratch / "archive")]
        archive_name = f"generated {opts.generate} archive, {opts.rows} real documentation texts"
    settings = {k: v for k, v in asdict(opts).items()}
    settings.update(archive_name=archive_name, max_length=bundle.spec.max_length, torch_batch=TORCH_BATCH,
                    threads_effective=opts.threads or machine["cores"])
    doc = new_run("throughput", machine, settings)
    linear = linear_flops_per_token(bundle.variant_path("fp32"))
    from docscore.bench.latency import body_dims

    dims = body_dims(bundle, opts.checkpoint)
    peak = machine.get("peak_fp32_gflops")
    variants = list(opts.variants or [v for v in bundle.variants if v != "fp16" or opts.device == "cuda"])
    base = dict(bundle=str(opts.bundle), inputs=inputs, text_column=opts.text_column, threads=opts.threads,
                device=opts.device, scratch=str(scratch), checkpoint=opts.checkpoint,
                max_length=bundle.spec.max_length)
    jobs = [dict(base, pipeline="pytorch-loop", variant="eager")] if opts.checkpoint else []
    for v in variants:
        jobs += [dict(base, pipeline="model-only", variant=v), dict(base, pipeline="score", variant=v)]
    for job in jobs:
        r = _run_job(job)
        docs_s = r["docs"] / r["seconds"]
        mean_len = r["tokens"] / max(r["docs"], 1)
        useful_flops = r["tokens"] * (linear + (attention_flops_per_token(mean_len, *dims) if dims else 0.0))
        gflops = useful_flops / r["seconds"] / 1e9
        row = {"pipeline": job["pipeline"], "variant": job["variant"], "device": opts.device, **r,
               "docs_per_s": docs_s, "tokens_per_s": r["tokens"] / r["seconds"], "gflops": gflops,
               "peak_share_pct": 100 * gflops / peak if peak and opts.device == "cpu" else None}
        doc["results"].append(row)
        if progress:
            progress(f"{job['pipeline']:12s} {job['variant']:9s} {docs_s:8.1f} docs/s {row['tokens_per_s']:9.0f} tok/s "
                     f"pad {100 * (r.get('pad_fraction') or 0):4.1f}% rss {r['peak_rss_mib']:.0f} MiB")
    torch_row = next((r for r in doc["results"] if r["pipeline"] == "pytorch-loop"), None)
    model_only = {r["variant"]: r for r in doc["results"] if r["pipeline"] == "model-only"}
    for r in doc["results"]:
        if torch_row:
            r["speedup_vs_pytorch"] = r["docs_per_s"] / torch_row["docs_per_s"]
        if r["pipeline"] == "score" and r["variant"] in model_only:
            r["share_of_model_only"] = r["docs_per_s"] / model_only[r["variant"]]["docs_per_s"]
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return doc


def _main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    result = MEASURES[job["pipeline"]](job)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
