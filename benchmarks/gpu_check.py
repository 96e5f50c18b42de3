"""The prepared GPU check: one run, a few minutes, everything issue 18's targets ask of the CUDA path, as JSON.

On the machine you work on (no GPU needed), pack the body's config and tokenizer — no weights, a few hundred KiB,
small enough for any transfer to a GPU host:

    python benchmarks/gpu_check.py --pack .gpucheck

On the GPU host (torch, transformers, onnx, onnxruntime-gpu; see docs/gpu.md for bringing onnxruntime-gpu there):

    python benchmarks/gpu_check.py --body .gpucheck/body --device cuda --output gpu_check.json

Rehearsal on a CPU (what tests/bench/test_gpu_check.py runs, with a tiny body of the same tokenizer):

    python benchmarks/gpu_check.py --body .gpucheck/body --tiny --device cpu --docs 48 --output /tmp/gpu_check.json

Steps, each recorded in the JSON as it finishes (a run cut short still leaves what it measured):

1. ``environment``: Python, torch (+ its CUDA), onnxruntime build and providers, the GPU's name.
2. ``checkpoint``: a body of the packed config (MiniLM-shaped: 6 layers, 384 hidden) with random weights
   (seeded), docscore's head, the real tokenizer.
3. ``export``: ``export-onnx`` with the optimized variant and, on CUDA, fp16 (gated and invariance-checked there
   by export itself; ``--allow-batch-dependent`` so that an fp16 that is not batch-invariant on the card is kept,
   marked, and measured rather than ending the check).
4. ``verify``: ``docscore verify --device DEVICE``: parity of every ONNX Runtime variant against PyTorch fp32 and
   the invariance check (alone vs batched, two budgets) on the device's session — fp32 with TF32 off.
5. ``score``: ``docscore score --device DEVICE`` end to end over a generated archive of real documentation text,
   twice, with different token budgets: rows, docs/s, and whether every score is bit-identical between the two.
6. ``throughput``: ``bench throughput`` on the same archive: the PyTorch loops (fp32 eager; on CUDA also fp16,
   bf16 autocast, fp16 under ``torch.compile``), model-only and ``score`` per variant, each in its own process.
7. ``targets``: each target of the issue, met or not, with the number behind it.

Exit 0 when every step ran (a missed target is reported, not an error), 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
LABELS = ("billing", "shipping", "tech")

# The targets on the GPU (docs/gpu.md): fp32 parity with TF32 off, fp16 labels and scores, end to end speed.
FP32_MAX_LOGIT = 1e-4
FP16_MIN_LABELS = 0.995
FP16_MAX_SCORE = 1e-2
SPEEDUP_VS_TORCH_FP16 = 1.5


def pack(dest: Path) -> Path:
    """The embedded MiniLM body's config and tokenizer files (no weights) → ``dest/body``."""
    from docscore.model import embedded_body_path

    src, body = Path(embedded_body_path()), dest / "body"
    body.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, body / name)
    size = sum(p.stat().st_size for p in body.iterdir())
    print(f"packed {src.name}'s config and tokenizer ({size / 1024:.0f} KiB, no weights) -> {body}")
    return body


def environment() -> dict:
    """What the numbers were measured on (:func:`docscore.bench.machine.machine_info`: CPU, GPU, versions), plus
    the ONNX Runtime build, its providers and torch's CUDA."""
    from docscore.bench.machine import machine_info

    env = machine_info()
    try:
        import onnxruntime as ort

        from docscore.runtime.ort import ort_build

        env["onnxruntime_build"], env["providers"] = ort_build(), ort.get_available_providers()
    except ImportError as e:
        env["onnxruntime_build"] = f"missing: {e}"
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
    except ImportError as e:
        env["torch_cuda"] = f"missing: {e}"
    return env


def make_checkpoint(body_dir: Path, out: Path, tiny: bool, max_length: int) -> dict:
    """A body of ``body_dir``'s config (or a tiny one of the same vocabulary), random weights, docscore's head."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from docscore.checkpoint import save_checkpoint
    from docscore.model import DocClassifier
    from docscore.spec import HeadConfig, ModelSpec

    config = AutoConfig.from_pretrained(str(body_dir))
    if tiny:
        for key, value in TINY.items():
            setattr(config, key, value)
    torch.manual_seed(0)
    model = DocClassifier(AutoModel.from_config(config), HeadConfig(labels=LABELS, pooling="mean")).eval()
    spec = ModelSpec(model.head_config, max_length, model.input_names, config.model_type)
    save_checkpoint(model, AutoTokenizer.from_pretrained(str(body_dir)), out, spec)
    return {"body": config.model_type, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "parameters": sum(p.numel() for p in model.parameters()), "max_length": max_length,
            "weights": "random (seed 0)"}


def docscore(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "docscore", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **(env or {})))


def checked(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def parity_figures(report: dict | None) -> dict:
    """A parity report's worst numbers over its data and sweep cases."""
    report = report or {}
    kinds = [report[k] for k in ("data", "sweep") if report.get(k)]
    worst = (lambda key: max((k[key] for k in kinds if k.get(key) is not None), default=None))
    return {"device": report.get("device"), "passed": report.get("passed"),
            "max_abs_logit_diff": worst("max_abs_logit_diff"), "max_abs_score_diff": worst("max_prob_diff"),
            "label_agreement": (report.get("data") or {}).get("label_agreement")}


def export(ckpt: Path, bundle: Path, gate: Path, device: str) -> dict:
    args = ["export-onnx", str(ckpt), "--output", str(bundle), "--optimize", "--verify-data", str(gate),
            "--overwrite"] + (["--fp16", "--allow-batch-dependent"] if device == "cuda" else [])
    checked(docscore(*args), "export-onnx")
    manifest = json.loads((bundle / "docscore.json").read_text())
    return {name: {"verified": e.get("verified"), **parity_figures(e.get("parity")),
                   "bit_identical": (e.get("invariance") or {}).get("bit_identical"),
                   "invariance_max_abs_score_diff": (e.get("invariance") or {}).get("max_abs_score_diff"),
                   "batch_dependent": bool(e.get("batch_dependent")), "note": e.get("note")}
            for name, e in manifest["variants"].items()}


def verify(ckpt: Path, bundle: Path, device: str) -> dict:
    proc = checked(docscore("verify", "--model", str(bundle), "--checkpoint", str(ckpt), "--device", device,
                            "--json"), f"verify --device {device}")
    report = json.loads(proc.stdout)
    out = {}
    for name, v in report["variants"].items():
        inv = v.get("invariance") or {}
        out[name] = {**parity_figures(v.get("parity")),
                     "invariance_passed": inv.get("passed"), "bit_identical": inv.get("bit_identical"),
                     "invariance_max_abs_score_diff": inv.get("max_abs_score_diff")}
    return out


def score(bundle: Path, archive: Path, work: Path, device: str, variant: str) -> dict:
    """Score the archive twice (token budgets 4096 and 32768); rows, docs/s, bit-identity of the two."""
    import pyarrow.parquet as pq

    runs = {}
    for budget in ("4096", "32768"):
        out = work / f"scores-{variant}-{budget}"
        t = time.perf_counter()
        checked(docscore("score", str(archive), "--model", str(bundle), "--output", str(out), "--device", device,
                         "--variant", variant, "--token-budget", budget, "--id-column", "doc_id", "--overwrite", "--no-progress"),
                f"score --device {device} --variant {variant}")
        seconds = time.perf_counter() - t
        table = pq.read_table(out).sort_by("doc_id")
        runs[budget] = (table, seconds)
    (a, sa), (b, sb) = runs["4096"], runs["32768"]
    cols = [c for c in a.column_names if c == "score" or c.startswith("score_") or c == "label"]
    return {"rows": a.num_rows, "seconds": round(sa, 2), "docs_per_s": round(a.num_rows / sa, 1),
            "seconds_budget_32768": round(sb, 2),
            "bit_identical_across_budgets": all(a.column(c).equals(b.column(c)) for c in cols)}


def throughput(bundle: Path, ckpt: Path, archive: Path, device: str, variants: list[str]) -> dict:
    from docscore.bench.throughput import ThroughputOptions, run_throughput

    doc = run_throughput(ThroughputOptions(bundle=str(bundle), checkpoint=str(ckpt), inputs=(str(archive),),
                                           variants=tuple(variants), device=device, peers=False, choice=False,
                                           warmup_docs=32), progress=print)
    keep = ("pipeline", "variant", "precision", "docs_per_s", "tokens_per_s", "pad_fraction", "gflops",
            "peak_gflops", "peak_share_pct", "speedup_vs_pytorch", "share_of_model_only", "tokenize_s", "model_s")
    return {"results": [{k: r.get(k) for k in keep} for r in doc["results"]], "skipped": doc["skipped"]}


def targets(doc: dict, device: str) -> dict:
    """Each target of the issue: ``{"met": bool | None, "value": ..., "target": ...}`` (None: not measurable)."""
    ver, out = doc.get("verify") or {}, {}
    fp32 = ver.get("fp32") or {}
    out["fp32_parity"] = {"value": fp32.get("max_abs_logit_diff"), "target": f"<= {FP32_MAX_LOGIT} |Δlogit|",
                          "met": None if fp32.get("max_abs_logit_diff") is None
                          else fp32["max_abs_logit_diff"] <= FP32_MAX_LOGIT}
    for name, v in ver.items():
        out[f"{name}_invariance"] = {"value": "bit-identical" if v.get("bit_identical")
                                     else v.get("invariance_max_abs_score_diff"),
                                     "target": "bit-identical, or the bound measured", "met": v.get("invariance_passed")}
    fp16 = ver.get("fp16")
    if fp16:
        ok = (fp16.get("label_agreement") or 0) >= FP16_MIN_LABELS and \
            (fp16.get("max_abs_score_diff") or 1) <= FP16_MAX_SCORE
        out["fp16_parity"] = {"value": {"labels": fp16.get("label_agreement"),
                                        "max_abs_score_diff": fp16.get("max_abs_score_diff")},
                              "target": f"labels >= {FP16_MIN_LABELS:.1%}, |Δscore| <= {FP16_MAX_SCORE}", "met": ok}
    rows = {(r["pipeline"], r["variant"]): r for r in (doc.get("throughput") or {}).get("results", [])}
    torch_row = rows.get(("pytorch-loop", "fp16" if device == "cuda" else "eager"))
    best = max((r for (p, _), r in rows.items() if p == "score"), key=lambda r: r["docs_per_s"], default=None)
    if torch_row and best:
        ratio = best["docs_per_s"] / torch_row["docs_per_s"]
        share = best.get("share_of_model_only")
        out["score_vs_pytorch"] = {
            "value": round(ratio, 2), "variant": best["variant"], "met": ratio >= SPEEDUP_VS_TORCH_FP16,
            "target": f">= {SPEEDUP_VS_TORCH_FP16}x PyTorch {torch_row['variant']} in a plain loop",
            "peak_share_pct": best.get("peak_share_pct"),
            "bound_by": None if share is None else ("the model (GPU)" if share >= 0.8
                                                    else "the CPU-side pipeline (read, tokenise, write)"),
            "share_of_model_only": share}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", metavar="DIR", help="only write the embedded body's config + tokenizer to DIR/body")
    ap.add_argument("--body", metavar="DIR", help="a body folder (config.json + tokenizer files), e.g. from --pack")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer body of the same tokenizer (a CPU rehearsal)")
    ap.add_argument("--docs", type=int, default=4000, help="documents in the generated archive (default 4000)")
    ap.add_argument("--gate-rows", type=int, default=200, help="texts of the parity gate (default 200)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per document (default 256)")
    ap.add_argument("--work", metavar="DIR", help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--output", metavar="JSON", required=False, default="gpu_check.json")
    args = ap.parse_args(argv)
    if args.pack:
        pack(Path(args.pack))
        return 0
    if not args.body:
        ap.error("--body DIR is required (make one with --pack DIR on a machine that has docscore's default body)")
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="docscore-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    output = Path(args.output)
    doc: dict = {"device": args.device, "settings": {k: v for k, v in vars(args).items() if k != "pack"},
                 "steps": {}, "errors": {}}

    def save() -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(doc, indent=2, default=str))

    def step(name: str, fn, *a):
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            doc[name] = fn(*a)
            ok = True
        except Exception as e:  # noqa: BLE001 - every failure is recorded, then the run goes on where it can
            doc["errors"][name] = f"{type(e).__name__}: {str(e).strip()[:2000]}"
            print(traceback.format_exc(), file=sys.stderr)
            ok = False
        doc["steps"][name] = {"ok": ok, "seconds": round(time.perf_counter() - t, 2)}
        save()
        return ok

    from docscore.bench.archive import make_archive, real_documents

    ckpt, bundle, archive, gate = work / "checkpoint", work / "bundle", work / "archive", work / "gate.parquet"
    step("environment", environment)
    if step("checkpoint", make_checkpoint, Path(args.body), ckpt, args.tiny, args.max_length):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": real_documents(args.gate_rows)}), gate)
        make_archive(archive, args.docs, "long", shards=4)
        if step("export", export, ckpt, bundle, gate, args.device):
            step("verify", verify, ckpt, bundle, args.device)
            variants = ["fp32", "optimized"] + (["fp16"] if args.device == "cuda" else [])
            for v in variants:
                step(f"score_{v}", score, bundle, archive, work, args.device, v)
            step("throughput", throughput, bundle, ckpt, archive, args.device, variants)
    doc["targets"] = targets(doc, args.device)
    save()
    for name, t in doc["targets"].items():
        print(f"target {name}: {'met' if t['met'] else 'MISSED' if t['met'] is False else 'n/a'} "
              f"({t['value']}; {t['target']})")
    print(f"wrote {output}; errors: {', '.join(doc['errors']) or 'none'}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
