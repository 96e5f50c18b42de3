"""``docscore score``: stream Parquet archives through an ONNX bundle into one scored file per input shard."""

from __future__ import annotations

import argparse

from docscore.commands import HelpFormatter
import json
import sys

from docscore.batch.options import ScoreOptions

_D = ScoreOptions()


def register(sub, name: str) -> argparse.ArgumentParser:
    """The ``score`` parser: one ``add_argument`` per option, in the groups ``--help`` shows (long because the
    command has that many options, not because it does anything else)."""
    p = sub.add_parser(
        name,
        help="score Parquet archives with an ONNX bundle (no torch needed)",
        description="Score every document of INPUT Parquet files with an exported bundle. Writes one Parquet file "
        "per input shard into OUT (same relative path, same row order), a run manifest, a JSON summary and "
        "_SUCCESS. Rerunning the same command resumes: finished shards are skipped, unfinished ones redone. "
        "One run at a time per OUT. Paths with a component starting with _ or . are skipped; hive key=value "
        "folders are columns. Exit codes: 0 success, 1 partial (failed/refused/stale files or row error rate above "
        "--max-error-rate), 2 refused options or input, 4 bad bundle, 5 output I/O error, 6 OUT locked by "
        "another run.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="Parquet file, directory (every *.parquet below it) or glob (quote it); a local path or a "
                   "URI (s3://, gs://, abfs://, hdfs://, file://)")
    p.add_argument("--model", "-m", required=True, metavar="BUNDLE",
                   help="bundle directory from export-onnx, local or a URI (copied once into a local cache)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output directory, local or a URI")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3-compatible endpoint (http://host:9000) for s3:// URIs; default: AWS_ENDPOINT_URL, "
                   "else AWS. Credentials come from the standard AWS chain, never from the command line")
    p.add_argument("--text-column", default=_D.text_column,
                   help="column holding the document text; a dotted path (meta.body) names a struct field; "
                   "binary columns are decoded as UTF-8")
    p.add_argument("--id-column", default=None, help="column copied to the output first (e.g. doc_id)")
    p.add_argument("--passthrough", nargs="+", default=[], metavar="COL",
                   help="more columns copied unchanged (hive partition keys and dotted struct paths included)")
    p.add_argument("--device", default=_D.device, choices=["cpu", "cuda"],
                   help="cuda fails (never falls back to CPU) when ONNX Runtime cannot run on the GPU")
    p.add_argument("--variant", default=None,
                   choices=["fp32", "optimized", "bf16", "int8", "int8-dynamic", "fp16"],
                   help="bundle variant; each names its runtime (fp32/optimized/int8-dynamic/fp16: ONNX Runtime; "
                   "bf16/int8: OpenVINO). Default: the fastest verified, batch-invariant variant this host can run, "
                   "measured on this CPU and then kept (`docscore bench choose` shows why)")
    p.add_argument("--threads", type=int, default=None, help="CPU inference threads (default: all cores)")
    p.add_argument("--token-budget", type=int, default=_D.token_budget,
                   help="padded tokens per inference batch (rows x padded length)")
    p.add_argument("--max-batch-rows", type=int, default=_D.max_batch_rows, help="rows per inference batch at most")
    p.add_argument("--sort-window", type=int, default=_D.sort_window,
                   help="documents sorted together by length before batching (input order is restored)")
    p.add_argument("--long-docs", default=_D.long_docs, choices=["truncate", "chunk"],
                   help="truncate: first max_length tokens; chunk: overlapping windows over the whole text")
    p.add_argument("--chunk-overlap", type=int, default=_D.chunk_overlap, help="tokens shared by adjacent chunks")
    p.add_argument("--chunk-agg", default=_D.chunk_agg, choices=["mean", "max"],
                   help="how chunk logits combine into the document's, per label")
    p.add_argument("--max-chunks", type=int, default=_D.max_chunks, metavar="N",
                   help="the row bound: a row costs at most N windows of max_length tokens. chunk mode: a row "
                   "needing more gets a per-row error and no score; both modes: at most N x max_length x 16 "
                   "characters of a row are tokenised, and a row that cannot be scored within them gets the error "
                   "(truncate: no word boundary after its first max_length tokens). Scored rows are unchanged")
    p.add_argument("--clip-chars-per-token", type=int, default=_D.clip_chars_per_token,
                   help="truncate mode: cut texts to max_length x N characters before tokenising (checked; "
                   "0 = tokenise whole texts)")
    p.add_argument("--checkpoint-rows", type=int, default=_D.checkpoint_rows,
                   help="input rows per committed part of a file; a kill redoes at most this many")
    p.add_argument("--io-binding", default=None, action=argparse.BooleanOptionalAction,
                   help="bind inputs/outputs to the device (default: on for cuda, off for cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard OUT's earlier outputs when the bundle or options changed (else refuse)")
    p.add_argument("--on-change", default=_D.on_change, choices=["rescore", "refuse", "keep"],
                   help="an input changed since it was scored: rescore it; refuse (keep the old output, exit 1, "
                   "no _SUCCESS); keep (keep the old output, exit 0). Other files are scored either way")
    p.add_argument("--prune", action="store_true",
                   help="remove the outputs of deleted inputs (default: keep them, report them, exit 1)")
    p.add_argument("--no-reuse", dest="reuse", action="store_false",
                   help="compute every row, even a text this output scored before (default: copy its outputs, "
                   "which are the same bytes, from OUT/_docscore/reuse/), and keep no score files")
    p.add_argument("--max-error-rate", type=float, default=_D.max_error_rate, metavar="RATE",
                   help="exit 1 (no _SUCCESS) when more than this share of the output rows have a per-row error")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first unreadable file (default: score the others, exit 1 at the end)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this machine, no Ray needed; ray: Ray Data actors (pip install 'docscore[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--engine ray: a cluster (host:6379, ray://host:10001 or auto); default: a private local "
                   "Ray instance")
    p.add_argument("--workers", type=int, default=None,
                   help="--engine ray: scoring actors (default: one per CPU, or one per GPU with --device cuda)")
    p.add_argument("--ray-tmp-dir", default=None, metavar="DIR",
                   help="--engine ray: Ray's session files for a local instance (keep the path short)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def options_from_args(args) -> ScoreOptions:
    return ScoreOptions(
        text_column=args.text_column, id_column=args.id_column, passthrough=tuple(args.passthrough),
        device=args.device, variant=args.variant, threads=args.threads, io_binding=args.io_binding,
        token_budget=args.token_budget, max_batch_rows=args.max_batch_rows, sort_window=args.sort_window,
        long_docs=args.long_docs, chunk_overlap=args.chunk_overlap, chunk_agg=args.chunk_agg,
        max_chunks=args.max_chunks,
        clip_chars_per_token=args.clip_chars_per_token, checkpoint_rows=args.checkpoint_rows,
        overwrite=args.overwrite, fail_fast=args.fail_fast, on_change=args.on_change, prune=args.prune,
        max_error_rate=args.max_error_rate, s3_endpoint=args.s3_endpoint, reuse=args.reuse,
    )


class _Bars:
    """tqdm bars for rows and files."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.rows_bar = self.files_bar = None

    def start(self, files, rows):
        if not self.enabled:
            return
        from tqdm import tqdm

        self.files_bar = tqdm(total=files, unit="file", desc="files", position=1, leave=False)
        self.rows_bar = tqdm(total=rows or None, unit="row", desc="rows ", position=0, dynamic_ncols=True)

    def rows(self, n):
        if self.rows_bar is not None:
            self.rows_bar.update(n)

    def file_done(self, rel, status):
        if self.files_bar is not None:
            self.files_bar.update(1)

    def close(self):
        for bar in (self.rows_bar, self.files_bar):
            if bar is not None:
                bar.close()


def run(args) -> int:
    from docscore.batch.runner import score_files

    bars = _Bars(enabled=not args.no_progress and sys.stderr.isatty())
    try:
        if args.engine == "ray":
            from docscore.batch.ray import RayOptions, score_files_ray

            summary = score_files_ray(args.inputs, args.model, args.output, options_from_args(args),
                                      RayOptions(address=args.ray_address, workers=args.workers,
                                                 tmp_dir=args.ray_tmp_dir), progress=bars)
        else:
            summary = score_files(args.inputs, args.model, args.output, options_from_args(args), progress=bars)
    finally:
        bars.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(render_summary(summary))
    return 0 if summary.ok else 1


def render_summary(s) -> str:
    lines = [
        f"scored {s.rows:,} rows ({s.errors:,} with errors) from {s.files} file(s)"
        + (f", {s.files_skipped} already done" if s.files_skipped else "")
        + (f", {s.files_failed} FAILED" if s.files_failed else "")
        + (f"; {s.unk_rows:,} rows mostly unknown tokens (see unk_fraction)" if s.unk_rows else ""),
        f"{s.inferred_rows:,} rows inferred, {s.reused_rows:,} reused"
        + (f" (from {s.reuse_index_rows:,} cached rows, index {s.reuse_index_bytes / 2**20:.1f} MiB, loaded in "
           f"{s.reuse_load_s:.2f} s)" if s.reuse_index_rows else ""),
        f"{s.docs_per_s:,.1f} docs/s, {s.tokens_per_s:,.0f} tokens/s, pad fraction {s.pad_fraction:.1%}, "
        f"wall {s.wall_s:.1f} s, variant {s.variant}",
        f"outputs in {s.output_dir}",
    ]
    for f in s.failed:
        lines.append(f"  failed: {f['path']}: {f['error']}")
    for c in s.changed:
        lines.append(f"  changed: {c['path']}: {c['action']}")
    for d in s.deleted:
        lines.append(f"  deleted: {d['input']}: output {d['output']} {d['action']}")
    for d in s.schema_drift:
        lines.append(f"  schema drift: {d['path']}: {d['columns']} (most files: {d['expected']})")
    if s.cleaned:
        lines.append(f"  removed {s.cleaned} file(s) left by an interrupted run")
    lines.append(f"row error rate {s.error_rate:.2%} (max {s.max_error_rate:.2%})"
                 + ("" if s.ok else "; NOT OK: " + "; ".join(s.problems)))
    return "\n".join(lines)
