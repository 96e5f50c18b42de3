"""Throughput on a Parquet archive: the full ``score`` pipeline and model-only inference per variant, runtime
peers (OpenVINO fp32 of ``model.onnx``; Optimum where it is installed) and the plain PyTorch loop a user would
write — all in one run, on the same documents, with the same truncation and the same warm-up.

Fairness rules, the same for every candidate:

- truncation at the same ``max_length`` (the bundle's, or a lower ``--max-length``; a higher one is refused,
  since the bundle was verified at its own);
- the same warm-up: the first ``warmup_docs`` documents run once through the candidate's own pipeline, untimed,
  in the process that is then timed;
- each measurement in its own Python process (``python -m docscore.bench.throughput <json>``), so its peak RSS is
  its own and no measurement warms caches for the next;
- each row's share of peak is against the nominal peak of the precision its matrix multiplies run in (fp32, bf16
  or int8: :mod:`docscore.bench.peaks`), on the physical cores its threads can use.

The PyTorch (and Optimum) loop times tokenisation and the model separately: ``tokenize_s`` + ``model_s`` ≈
``seconds``. ``score`` is a whole ``score_files`` call, session start-up included, as a user runs it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from docscore.bench.machine import machine_info, peak_for
from docscore.bench.peaks import gpu_peak_gflops, variant_precision
from docscore.bench.report import new_run
from docscore.bench.stats import attention_flops_per_token, linear_flops_per_token
from docscore.bench.variants import body_dims
from docscore.runtime.choose import cannot_run
from docscore.bundle import Bundle, load_bundle
from docscore.errors import ConfigError

log = logging.getLogger(__name__)

# PyTorch loops added on CUDA besides fp32 eager: fp16 weights, bf16 autocast, and fp16 under torch.compile.
CUDA_TORCH_LOOPS = ("fp16", "bf16-autocast", "fp16-compile")
MAY_FAIL = ("fp16-compile",)  # a candidate whose failure is recorded as skipped instead of ending the benchmark
TORCH_BATCH = 32  # the plain loop's fixed batch size, as a user would write it
WARMUP_DOCS = 64  # documents every candidate runs once, untimed, before it is timed
# Runtime peers: not bundle variants (never gated, never a default), the same file run by another runtime.
OPTIMUM_INT8 = "int8-dynamic-avx512_vnni"  # Optimum's own CPU int8 (its AutoQuantizationConfig.avx512_vnni)
PEERS = {"fp32-openvino": ("fp32", {"runtime": "openvino", "precision": "f32"})}


@dataclass
class ThroughputOptions:
    """Options of ``docscore bench throughput``.

    Args:
        bundle: bundle directory.
        checkpoint: checkpoint directory; adds the plain PyTorch loop (seed model, input order, batches of 32,
            the HF tokenizer).
        inputs: Parquet files/directories; empty → generate an archive from real documentation text.
        generate: ``long`` or ``mixed`` for the generated archive.
        rows: rows of the generated archive.
        variants: bundle variants (default: every variant in the bundle this host can run; fp16 on CUDA only).
        threads: intra-op threads for every runtime and torch (default: all physical cores).
        device: ``cpu`` or ``cuda``.
        text_column: the text column of the archive.
        max_length: tokens per document for every candidate (default: the bundle's; higher is refused).
        warmup_docs: documents each candidate runs once, untimed, before it is timed.
        peers: add runtime peers on CPU (OpenVINO fp32 of ``model.onnx``, model-only).
        optimum_python: the interpreter of a virtual environment with ``optimum[onnxruntime]`` (Optimum pins its
            own transformers); adds an Optimum loop when it can import ``optimum.onnxruntime``. Default: this
            interpreter.
        choice: record which default variant ``score`` would choose here, and why (:mod:`docscore.runtime.choose`).
        repeats: rounds; every round measures every candidate once, in the same order, and each candidate's row
            is its median round (by docs/s), with every round's docs/s kept in ``rounds_docs_per_s``.
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
    max_length: int | None = None
    warmup_docs: int = WARMUP_DOCS
    peers: bool = True
    optimum_python: str | None = None
    choice: bool = True
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")

    @classmethod
    def from_args(cls, args) -> "ThroughputOptions":
        rows = args.rows or (64 if args.quick else 1000)
        warmup = args.warmup_docs if args.warmup_docs is not None else (16 if args.quick else WARMUP_DOCS)
        return cls(bundle=args.model, checkpoint=args.checkpoint, inputs=tuple(args.inputs), generate=args.generate,
                   rows=rows, variants=tuple(args.variants.split(",")) if args.variants else None,
                   threads=args.threads, device=args.device, max_length=args.max_length, warmup_docs=warmup,
                   optimum_python=args.optimum_python, repeats=getattr(args, "repeats", 1))


def effective_max_length(bundle_max: int, requested: int | None) -> int:
    """The truncation every candidate uses: the bundle's ``max_length`` or a lower ``requested`` one."""
    if requested is None:
        return bundle_max
    if requested < 2 or requested > bundle_max:
        raise ConfigError(f"--max-length must be between 2 and the bundle's max_length {bundle_max} (the length it "
                          f"was exported and verified at), got {requested}; export a bundle with a larger one")
    return requested


def bench_bundle(path: str | os.PathLike, max_length: int | None = None, peers: tuple[str, ...] = ()) -> Bundle:
    """The bundle as the benchmark runs it: truncation at ``max_length`` and the runtime ``peers`` added as
    pseudo-variants, so every candidate goes through the same :class:`~docscore.batch.Scorer`."""
    bundle = load_bundle(path)
    manifest = dict(bundle.manifest)
    manifest["spec"] = dict(manifest["spec"], max_length=max_length or bundle.spec.max_length)
    manifest["variants"] = dict(bundle.variants)
    for peer in peers:
        source, overrides = PEERS[peer]
        entry = {k: v for k, v in bundle.variants[source].items() if k not in ("parity", "speed")}
        manifest["variants"][peer] = dict(entry, **overrides, peer=True, verified=False,
                                          note=f"benchmark peer: {source}'s file on another runtime, not gated")
    return Bundle(bundle.path, manifest)


def _peak_rss_mib() -> float:
    """This process's peak RSS. ``VmHWM`` first: Linux carries ``ru_maxrss`` across ``exec``, so a measurement
    process would report at least its parent's RSS at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _read_tables(inputs: list[str], column: str) -> list:
    import pyarrow.parquet as pq

    from docscore.batch.inputs import discover

    return [pq.read_table(shard.path, columns=[column]) for shard in discover(inputs)]


def _texts(job: dict) -> list[str]:
    texts = []
    for table in _read_tables(job["inputs"], job["text_column"]):
        texts.extend(table.column(job["text_column"]).to_pylist())
    return [t for t in texts if isinstance(t, str) and t.strip()]


def _warmup_table(job: dict):
    """The first ``warmup_docs`` documents of the archive, in input order."""
    import pyarrow as pa

    tables = _read_tables(job["inputs"], job["text_column"])
    return pa.concat_tables(tables).slice(0, job["warmup_docs"])


# --- the measured pipelines, each run in a fresh process -------------------------------------------------------

def _score_options(job: dict, **kw):
    from docscore.batch import ScoreOptions

    return ScoreOptions(text_column=job["text_column"], variant=job["variant"], threads=job["threads"],
                        device=job["device"], **kw)


def _measure_score(job: dict) -> dict:
    """A whole ``score_files`` call (session start-up included), after the warm-up documents were scored once."""
    import pyarrow.parquet as pq

    from docscore.batch import score_files

    bundle = bench_bundle(job["bundle"], job["max_length"], tuple(job.get("peers", ())))
    opts = _score_options(job, overwrite=True)
    scratch = Path(job["scratch"])
    warm_in = scratch / f"warm-in-{job['variant']}"
    warm_in.mkdir(parents=True, exist_ok=True)
    pq.write_table(_warmup_table(job), warm_in / "warm.parquet")
    # fresh outputs every time: a finished output would be skipped (resume), and --repeats runs each job again
    score_files([str(warm_in)], bundle, tempfile.mkdtemp(prefix=f"warm-out-{job['variant']}-", dir=scratch), opts)
    out = tempfile.mkdtemp(prefix=f"score-{job['variant']}-", dir=scratch)
    t0 = time.perf_counter()
    summary = score_files(job["inputs"], bundle, out, opts)
    seconds = time.perf_counter() - t0
    s = summary if isinstance(summary, dict) else summary.to_dict()
    return {"docs": s["rows"], "tokens": s["tokens"], "slots": s.get("slots"), "seconds": seconds,
            "pad_fraction": s.get("pad_fraction")}


def _measure_model_only(job: dict) -> dict:
    """Inference alone: the scorer's own tokenisation and batching happen first, untimed."""
    from docscore.batch import Scorer

    bundle = bench_bundle(job["bundle"], job["max_length"], tuple(job.get("peers", ())))
    scorer = Scorer(bundle, _score_options(job)).load()
    scorer.infer(scorer.prepare(_warmup_table(job)))  # warm-up
    prepared = [scorer.prepare(w) for table in _read_tables(job["inputs"], job["text_column"])
                for w in scorer.windows(table)]
    t0 = time.perf_counter()
    for p in prepared:
        scorer.infer(p)
    seconds = time.perf_counter() - t0
    docs = sum(p.stats.rows - p.stats.errors for p in prepared)
    tokens = sum(p.stats.tokens for p in prepared)
    slots = sum(p.stats.slots for p in prepared)
    return {"docs": docs, "tokens": tokens, "slots": slots, "seconds": seconds,
            "pad_fraction": 1 - tokens / slots if slots else 0.0}


def _plain_loop(texts: list[str], tokenize: Callable, model: Callable, warmup_docs: int) -> dict:
    """Input order, fixed batches of :data:`TORCH_BATCH`; tokenisation and model timed apart.

    ``tokenize(texts) -> (feed, attention_mask)``, ``model(feed)`` runs one batch to completion.
    """
    def batches(items):
        return (items[i:i + TORCH_BATCH] for i in range(0, len(items), TORCH_BATCH))

    for chunk in batches(texts[:warmup_docs]):  # warm-up
        model(tokenize(chunk)[0])
    tokens = slots = 0
    tokenize_s = model_s = 0.0
    t_start = time.perf_counter()
    for chunk in batches(texts):
        t0 = time.perf_counter()
        feed, mask = tokenize(chunk)
        t1 = time.perf_counter()
        model(feed)
        model_s += time.perf_counter() - t1
        tokenize_s += t1 - t0
        tokens += int(mask.sum())
        slots += int(mask.shape[0] * mask.shape[1])
    seconds = time.perf_counter() - t_start
    return {"docs": len(texts), "tokens": tokens, "slots": slots, "seconds": seconds, "tokenize_s": tokenize_s,
            "model_s": model_s, "pad_fraction": 1 - tokens / slots if slots else 0.0}


def _measure_pytorch(job: dict) -> dict:
    """The loop a user would write: input order, fixed batches of 32, the HF tokenizer, truncation at the same
    ``max_length`` as every other candidate."""
    import torch

    from docscore.checkpoint import load_checkpoint

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = job["device"]
    model, tok, spec, _ = load_checkpoint(job["checkpoint"], device=device)

    def tokenize(chunk):
        enc = tok(chunk, padding=True, truncation=True, max_length=job["max_length"], return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items() if k in spec.input_names}, enc["attention_mask"]

    variant = job["variant"]
    autocast = variant == "bf16-autocast"
    if variant.startswith("fp16"):  # the whole model in half precision, as GPU users run it
        model = model.half()
    if variant.endswith("-compile"):
        model = torch.compile(model, dynamic=True)

    def run(feed):
        if autocast:  # the near-exact PyTorch peer: bf16 matrix multiplies, fp32 elsewhere
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
                model(**feed).float().cpu()
        else:
            model(**feed).cpu()  # .cpu() waits for CUDA

    with torch.inference_mode():
        return _plain_loop(_texts(job), tokenize, run, job["warmup_docs"])


def _measure_optimum(job: dict) -> dict:
    """The same plain loop with Optimum's ONNX Runtime model on the bundle's ``model.onnx``.

    Untested in docscore's CI: Optimum pins a transformers older than docscore's, so it runs from its own
    virtual environment (``--optimum-python``) and is skipped where it cannot be imported.
    """
    import numpy as np
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCustomTasks
    from transformers import PretrainedConfig

    bundle = load_bundle(job["bundle"])
    spec = bundle.spec
    options = ort.SessionOptions()
    if job["threads"]:
        options.intra_op_num_threads = job["threads"]
    # Optimum loads a model folder with a config.json (it infers the library from it): the bundle's model.onnx
    # (and its external data, if any) linked into a folder of its own
    file_name = bundle.variants["fp32"]["file"]
    model_dir = Path(job["scratch"]) / "optimum-fp32"
    model_dir.mkdir(parents=True, exist_ok=True)
    for src in Path(bundle.path).glob(file_name + "*"):
        if not (model_dir / src.name).exists():
            (model_dir / src.name).symlink_to(src.resolve())
    (model_dir / "config.json").write_text("{}")
    if job["variant"] == OPTIMUM_INT8:  # what an Optimum user ships for CPU: its own dynamic int8 of model.onnx
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        qdir = Path(job["scratch"]) / "optimum-int8"
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(str(model_dir), file_name=file_name).quantize(
            save_dir=str(qdir), quantization_config=config)
        (qdir / "config.json").write_text("{}")
        model_dir, file_name = qdir, next(p.name for p in qdir.glob("*.onnx"))
    model = ORTModelForCustomTasks.from_pretrained(
        str(model_dir), file_name=file_name, config=PretrainedConfig(),
        provider="CPUExecutionProvider", session_options=options)
    tok = bundle.tokenizer(truncate=False)
    tok.enable_truncation(job["max_length"])
    tok.enable_padding(pad_id=bundle.pad_id)

    def tokenize(chunk):
        encs = tok.encode_batch(chunk)
        feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
        return {k: v for k, v in feed.items() if k in spec.input_names}, feed["attention_mask"]

    return _plain_loop(_texts(job), tokenize, lambda feed: model(**feed), job["warmup_docs"])


MEASURES = {"score": _measure_score, "model-only": _measure_model_only, "pytorch-loop": _measure_pytorch,
            "optimum-loop": _measure_optimum}


def _child_env() -> dict:
    """The environment of a measurement process: this docscore first on the path (a worktree or a venv of its
    own imports the same code), offline, tokenizers free to use threads."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1")


def run_job(job: dict, python: str | None = None) -> dict:
    """One measurement in a process of its own (so no candidate's threads or caches help the next)."""
    proc = subprocess.run([python or sys.executable, "-m", "docscore.bench.throughput", json.dumps(job)],
                          capture_output=True, text=True, env=_child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {job['pipeline']} {job.get('variant')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def optimum_available(python: str | None = None) -> bool:
    """Whether ``python`` (default: this interpreter) can import ``optimum.onnxruntime``."""
    proc = subprocess.run([python or sys.executable, "-c", "import optimum.onnxruntime"], capture_output=True,
                          env=_child_env())
    return proc.returncode == 0


def plan_candidates(opts: ThroughputOptions, bundle: Bundle, skipped: list, native_bf16: bool = False
          ) -> tuple[list[tuple[str, str]], list[str]]:
    """(pipeline, variant) pairs to measure and the peers they need; what cannot run goes to ``skipped``.
    ``native_bf16``: the CPU computes bf16 natively, which adds the PyTorch bf16-autocast loop."""
    names = list(opts.variants or bundle.variants)
    peers = []
    if opts.peers and opts.device == "cpu" and "fp32" in bundle.variants:
        peers = list(PEERS)
    runnable = bench_bundle(opts.bundle, None, tuple(peers))
    jobs = [("pytorch-loop", "eager")] if opts.checkpoint else []
    if opts.checkpoint and opts.device == "cuda":  # the loops a GPU user writes: half precision, bf16, compiled
        jobs += [("pytorch-loop", v) for v in CUDA_TORCH_LOOPS]
    if opts.checkpoint and opts.device == "cpu":
        if native_bf16:
            jobs.append(("pytorch-loop", "bf16-autocast"))
        else:
            skipped.append({"pipeline": "pytorch-loop", "variant": "bf16-autocast",
                            "why": "this CPU has no native bf16 (AVX512_BF16 or AMX)"})
    for name in names:
        why = cannot_run(runnable, name, opts.device)
        if why:
            skipped.append({"pipeline": "model-only, score", "variant": name, "why": why})
            continue
        jobs += [("model-only", name), ("score", name)]
    for peer in list(peers):
        why = cannot_run(runnable, peer, opts.device)
        if why:
            skipped.append({"pipeline": "model-only", "variant": peer, "why": why})
            peers.remove(peer)
        else:
            jobs.append(("model-only", peer))
    if opts.device == "cpu" and "fp32" in bundle.variants:
        if optimum_available(opts.optimum_python):
            jobs += [("optimum-loop", "fp32"), ("optimum-loop", OPTIMUM_INT8)]
        else:
            skipped.append({"pipeline": "optimum-loop", "variant": "fp32",
                            "why": f"optimum.onnxruntime not importable by {opts.optimum_python or sys.executable}; "
                                   "install optimum[onnxruntime] in its own venv and pass --optimum-python "
                                   "(untested path)"})
    return jobs, peers


def _row(job: dict, r: dict, machine: dict, flops_per_token: Callable[[float], float], threads: int | None,
         precision: str) -> dict:
    docs_s = r["docs"] / r["seconds"]
    useful = r["tokens"] * flops_per_token(r["tokens"] / max(r["docs"], 1))
    gflops = useful / r["seconds"] / 1e9
    gpu = (machine.get("gpu") or "").splitlines()[0] if machine.get("gpu") else None
    peak = (peak_for(machine, precision, threads) if job["device"] == "cpu"
            else gpu_peak_gflops(gpu, precision))
    row = {"pipeline": job["pipeline"], "variant": job["variant"], "precision": precision, "device": job["device"],
           **r, "docs_per_s": docs_s, "tokens_per_s": r["tokens"] / r["seconds"], "gflops": gflops,
           "peak_gflops": peak, "peak_share_pct": 100 * gflops / peak if peak else None}
    if r.get("model_s"):
        row["model_gflops"] = useful / r["model_s"] / 1e9
        row["model_peak_share_pct"] = 100 * row["model_gflops"] / peak if peak else None
    return row


def run_throughput(opts: ThroughputOptions, progress: Callable[[str], None] | None = None) -> dict:
    bundle = load_bundle(opts.bundle)
    max_length = effective_max_length(bundle.spec.max_length, opts.max_length)
    machine = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="docscore-bench-"))
    try:
        return _run(opts, bundle, max_length, machine, scratch, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(opts, bundle, max_length, machine, scratch, progress) -> dict:
    inputs = list(opts.inputs)
    archive_name = ", ".join(inputs)
    if not inputs:
        from docscore.bench.archive import make_archive

        make_archive(scratch / "archive", opts.rows, opts.generate, shards=2)
        inputs = [str(scratch / "archive")]
        archive_name = f"generated {opts.generate} archive, {opts.rows} real documentation texts"
    settings = dict(asdict(opts), archive_name=archive_name, bundle_max_length=bundle.spec.max_length,
                    max_length=max_length, torch_batch=TORCH_BATCH,
                    threads_effective=opts.threads or machine["cores"])
    doc = new_run("throughput", machine, settings)
    doc["skipped"] = []
    linear = linear_flops_per_token(bundle.variant_path("fp32"))
    dims = body_dims(bundle, opts.checkpoint)

    def flops_per_token(mean_len: float) -> float:
        return linear + (attention_flops_per_token(mean_len, *dims) if dims else 0.0)

    pairs, peers = plan_candidates(opts, bundle, doc["skipped"], bool(machine["ops_per_cycle_per_core"].get("bf16")))
    runnable = bench_bundle(opts.bundle, None, tuple(peers))
    base = dict(bundle=str(opts.bundle), inputs=inputs, text_column=opts.text_column, threads=opts.threads,
                device=opts.device, scratch=str(scratch), checkpoint=opts.checkpoint, max_length=max_length,
                warmup_docs=opts.warmup_docs, peers=peers)
    rounds: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    failed: set[tuple[str, str]] = set()
    for rnd in range(opts.repeats):
        for pipeline, variant in pairs:
            if (pipeline, variant) in failed:
                continue
            job = dict(base, pipeline=pipeline, variant=variant)
            try:
                r = run_job(job, opts.optimum_python if pipeline == "optimum-loop" else None)
            except RuntimeError as e:
                if variant not in MAY_FAIL:
                    raise
                failed.add((pipeline, variant))  # torch.compile where it does not work: said, not fatal
                doc["skipped"].append({"pipeline": pipeline, "variant": variant,
                                       "why": "failed: " + str(e).strip().splitlines()[-1][:300]})
                continue
            rounds[(pipeline, variant)].append(r)
            if progress and opts.repeats > 1:
                progress(f"  round {rnd + 1}/{opts.repeats} {pipeline:12s} {variant:13s} "
                         f"{r['docs'] / r['seconds']:8.1f} docs/s")
    for pipeline, variant in [pair for pair in pairs if pair not in failed]:
        job = dict(base, pipeline=pipeline, variant=variant)
        runs = sorted(rounds[(pipeline, variant)], key=lambda x: x["docs"] / x["seconds"])
        r = dict(runs[(len(runs) - 1) // 2], rounds_docs_per_s=[round(x["docs"] / x["seconds"], 2)
                                                                for x in rounds[(pipeline, variant)]])
        if pipeline in ("pytorch-loop", "optimum-loop"):
            precision = {"bf16-autocast": "bf16", "fp16": "fp16", "fp16-compile": "fp16",
                         OPTIMUM_INT8: "int8"}.get(variant, "fp32")
        else:
            precision = variant_precision(variant, runnable.variants[variant])
        row = _row(job, r, machine, flops_per_token, opts.threads, precision)
        doc["results"].append(row)
        if progress:
            split = f" (tokenise {r['tokenize_s']:.1f} s, model {r['model_s']:.1f} s)" if "tokenize_s" in r else ""
            progress(f"{pipeline:12s} {variant:13s} {row['docs_per_s']:8.1f} docs/s {row['tokens_per_s']:9.0f} tok/s "
                     f"pad {100 * (r.get('pad_fraction') or 0):4.1f}% rss {r['peak_rss_mib']:.0f} MiB{split}")
    for s in doc["skipped"]:
        if progress:
            progress(f"skipped {s['pipeline']} {s['variant']}: {s['why']}")
    _relate(doc["results"])
    if opts.choice:
        from docscore.runtime.choose import ranking

        doc["choice"] = ranking(bundle, opts.device, opts.threads)
    return doc


def _relate(results: list[dict]) -> None:
    """Speed-ups against the PyTorch loop and each ``score`` row's share of its model-only speed."""
    torch_row = next((r for r in results if (r["pipeline"], r["variant"]) == ("pytorch-loop", "eager")), None)
    model_only = {r["variant"]: r for r in results if r["pipeline"] == "model-only"}
    for r in results:
        if torch_row:
            r["speedup_vs_pytorch"] = r["docs_per_s"] / torch_row["docs_per_s"]
        if r["pipeline"] == "score" and r["variant"] in model_only:
            r["share_of_model_only"] = r["docs_per_s"] / model_only[r["variant"]]["docs_per_s"]


def _main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    result = MEASURES[job["pipeline"]](job)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
