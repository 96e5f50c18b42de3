"""Writing benchmark results: JSON, a Markdown table, a PNG plot; and comparing two runs."""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from pathlib import Path


def new_run(kind: str, machine: dict, settings: dict) -> dict:
    """A fresh result document. Every run gets its own id and timestamp: results are never reused."""
    return {
        "kind": kind,
        "run_id": uuid.uuid4().hex,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "results": [],
    }


def write_json(doc: dict, path: Path) -> Path:
    from docscore.storage import write_bytes

    write_bytes(None, path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


def machine_line(m: dict) -> str:
    gpu = m.get("gpu") or "no GPU"
    peaks = {p: v for p, v in (m.get("peak_gflops") or {"fp32": m.get("peak_fp32_gflops")}).items() if v}
    peak = (", nominal peak GFLOP/s " + ", ".join(f"{p} {v}" for p, v in peaks.items())) if peaks else ""
    simd = " ".join(s for s in m.get("simd", []) if s in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                         "amx_tile"))
    v = m.get("versions", {})
    vers = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "openvino", "torch") if k in v)
    logical = f" of {m['logical_cpus']} logical CPUs" if m.get("logical_cpus", m.get("cores")) != m.get("cores") else ""
    clock = f" [clock: {m['clock_source']}]" if m.get("clock_source") else ""
    return (f"{m.get('cpu')} ({m.get('cores')} physical cores{logical} @ {m.get('ghz')} GHz, {simd}){peak}{clock}; "
            f"{gpu}; {vers}")


def _fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(doc: dict) -> str:
    lines = [f"Machine: {machine_line(doc['machine'])}", f"Settings: {json.dumps(doc['settings'])}", ""]
    if doc["kind"] == "latency":
        lines += ["| engine | variant | device | batch | seq | p50 ms | p95 ms | p99 ms | GFLOP/s | % of peak |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in doc["results"]:
            lines.append(
                f"| {r['engine']} | {r['variant']} | {r['device']} | {r['batch']} | {r['seq']} | {_fmt(r['p50'], 2)} | "
                f"{_fmt(r['p95'], 2)} | {_fmt(r['p99'], 2)} | {_fmt(r.get('gflops'))} | {_fmt(r.get('peak_share_pct'))} |")
        lines += ["", "% of peak: against the nominal peak of the variant's precision (fp32, bf16, int8)."]
        lines += [f"Skipped {sk['variant']}: {sk['why']}" for sk in doc.get("skipped", [])]
    else:
        lines += ["| pipeline | variant | precision | device | docs/s | tokens/s | pad % | tokenise s | model s | "
                  "peak RSS MiB | GFLOP/s | % of peak | vs PyTorch |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in doc["results"]:
            pad = r.get("pad_fraction")
            lines.append(
                f"| {r['pipeline']} | {r['variant']} | {r.get('precision', '-')} | {r['device']} | "
                f"{_fmt(r['docs_per_s'])} | {_fmt(r['tokens_per_s'], 0)} | {_fmt(pad * 100 if pad is not None else None)} | "
                f"{_fmt(r.get('tokenize_s'), 2)} | {_fmt(r.get('model_s'), 2)} | "
                f"{_fmt(r.get('peak_rss_mib'), 0)} | {_fmt(r.get('gflops'))} | {_fmt(r.get('peak_share_pct'))} | "
                f"{_fmt(r.get('speedup_vs_pytorch'), 2)}{'×' if r.get('speedup_vs_pytorch') else ''} |")
        lines += ["", "% of peak: against the nominal peak of the row's precision on the physical cores its threads "
                  "use; the loops' rows include tokenisation (tokenise s + model s)."]
        for sk in doc.get("skipped", []):
            lines.append(f"Skipped {sk['pipeline']} {sk['variant']}: {sk['why']}")
        if doc.get("choice"):
            lines += ["", choice_text(doc["choice"])]
    return "\n".join(lines) + "\n"


def choice_text(r: dict) -> str:
    """Why ``score`` runs the variant it runs here: from :func:`docscore.runtime.choose.ranking`."""
    lines = [f"Default variant on {r['device']} ({r['cpu']}): {r['chosen'] or 'none usable'}"
             + (f" ({r['source']})" if r.get("source") else "")]
    for name, speed in sorted(r.get("speed", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"  candidate {name}: {speed:.1f} sequences/s{'  <- chosen' if name == r['chosen'] else ''}")
    for name in r.get("candidates", []):
        if name not in r.get("speed", {}):
            lines.append(f"  candidate {name}{'  <- chosen' if name == r['chosen'] else ''}")
    for name, why in r.get("excluded", {}).items():
        lines.append(f"  excluded {name}: {why}")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if doc["kind"] == "latency":
        series: dict = {}
        for r in doc["results"]:
            series.setdefault((r["engine"], r["variant"], r["device"]), []).append(r)
        for (engine, variant, device), rows in series.items():
            rows = sorted(rows, key=lambda r: (r["batch"], r["seq"]))
            xs = [f"{r['batch']}×{r['seq']}" for r in rows]
            ax.plot(xs, [r["p50"] for r in rows], marker="o", label=f"{engine} {variant} ({device})")
        ax.set_yscale("log")
        ax.set_xlabel("batch × sequence length")
        ax.set_ylabel("p50 latency (ms, log)")
        ax.set_title("Latency by batch × sequence length")
    else:
        rows = doc["results"]
        labels = [f"{r['pipeline']}\n{r['variant']}" for r in rows]
        ax.bar(range(len(rows)), [r["docs_per_s"] for r in rows],
               color=["#888" if r["pipeline"].startswith("pytorch") else "#2a7" for r in rows])
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("docs/s")
        ax.set_title(f"Throughput on {doc['settings'].get('archive_name', 'archive')}")
    ax.legend(fontsize=7) if doc["kind"] == "latency" else None
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(doc: dict, out_dir: Path) -> dict[str, Path]:
    """``<kind>.json``, ``<kind>.md`` and ``<kind>.png`` in ``out_dir`` (rewritten on every run)."""
    out_dir = Path(out_dir)
    paths = {"json": write_json(doc, out_dir / f"{doc['kind']}.json")}
    md = out_dir / f"{doc['kind']}.md"
    md.write_text(markdown_table(doc))
    paths["md"] = md
    paths["png"] = plot(doc, out_dir / f"{doc['kind']}.png")
    return paths


def _key(doc_kind: str, r: dict) -> tuple:
    if doc_kind == "latency":
        return (r["engine"], r["variant"], r["device"], r["batch"], r["seq"])
    return (r["pipeline"], r["variant"], r["device"])


def compare(base: dict, new: dict) -> str:
    """A Markdown table putting two runs of the same kind side by side, with new/base ratios."""
    if base["kind"] != new["kind"]:
        raise ValueError(f"cannot compare a {base['kind']} run with a {new['kind']} run")
    kind = base["kind"]
    metric, better = ("p50", "lower") if kind == "latency" else ("docs_per_s", "higher")
    b = {_key(kind, r): r for r in base["results"]}
    n = {_key(kind, r): r for r in new["results"]}
    lines = [f"Comparing {metric} ({better} is better): base {base['run_id'][:8]} ({base['created']}) vs "
             f"new {new['run_id'][:8]} ({new['created']})", "",
             f"| {' | '.join(('engine', 'variant', 'device', 'batch', 'seq') if kind == 'latency' else ('pipeline', 'variant', 'device'))} "
             f"| base | new | new/base |",
             "|" + "---|" * (8 if kind == "latency" else 6)]
    for key in sorted(set(b) | set(n), key=str):
        bv = b.get(key, {}).get(metric)
        nv = n.get(key, {}).get(metric)
        ratio = f"{nv / bv:.2f}×" if bv and nv else "-"
        lines.append(f"| {' | '.join(str(k) for k in key)} | {_fmt(bv, 2)} | {_fmt(nv, 2)} | {ratio} |")
    return "\n".join(lines) + "\n"
