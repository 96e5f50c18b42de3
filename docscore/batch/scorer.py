"""The scorer: Arrow record batches in, scored Arrow tables out, rows in input order.

A :class:`Scorer` is built from ``(bundle path, ScoreOptions)`` and pickles as just that, so Ray Data
(``map_batches(Scorer, fn_constructor_args=(bundle, options), batch_format="pyarrow")``) or Spark
(``mapInArrow``) can rebuild it inside a worker. The local runner (:mod:`docscore.batch.runner`) calls its three
stages from three threads — :meth:`Scorer.prepare` (checks, clip, tokenise, plan), :meth:`Scorer.infer` (ONNX
Runtime, releases the GIL) and :meth:`Scorer.assemble` (order restored, output columns) — to overlap them.

Output columns, in this order:

- the id column and passthrough columns, unchanged;
- ``label`` (string): the predicted label (multi-label: the most confident one; regression: null);
- ``score`` (float32): its probability (regression: the predicted value of the first target);
- ``labels`` (list<string>, multi-label only): every label scoring above ``multi_label_threshold``;
- ``score_<label>`` (float32), one per label in the bundle's label order: softmax / sigmoid / raw value;
- ``num_tokens`` (int32): tokens the model read for the row, special tokens included (chunk mode: summed over
  chunks, overlaps counted twice);
- ``num_chunks`` (int32): 1 in truncate mode, the number of windows in chunk mode;
- ``unk_fraction`` (float32): share of the content tokens the model read (special tokens excluded) that are the
  tokenizer's unknown token; near 1 means the vocabulary could not read the text (emoji only, an unknown
  script) and the label says nothing about it;
- ``error`` (string): null when the row was scored, else why not (``null text``, ``empty text``,
  ``non-string text: <type>``, or a text over the row bound that ``max_chunks`` sets, the error naming it: see
  :mod:`docscore.batch.textprep`); every score column of such a row is null.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from docscore.runtime.engine import open_engine
from docscore.batch.options import ScoreOptions
from docscore.batch.plan import MicroBatch, plan_batches
from docscore.batch.textprep import (EMPTY_TEXT, ClipStats, char_lengths, encode_chunked, encode_truncated,
                                     no_cut_within, num_content_tokens, row_char_bound, text_values,
                                     tokenizer_splits_on_spaces, unk_fraction, unk_id)
from docscore.bundle import Bundle, load_bundle
from docscore.errors import ConfigError, InputDataError
from docscore.postprocess import predicted_index, scores_from_logits
from docscore.runtime.ort import pad_feed

log = logging.getLogger(__name__)

SCORE_PREFIX = "score_"
UNK_WARN_FRACTION = 0.5  # rows with more than this share of unknown tokens are counted and logged


@dataclass
class WindowStats:
    """Counters for one window; the runner adds them up into the run summary."""

    rows: int = 0
    errors: int = 0
    sequences: int = 0  # model inputs: one per row (truncate) or per chunk
    tokens: int = 0  # real tokens fed to the model
    slots: int = 0  # padded slots fed to the model (batch rows x padded length, summed)
    clipped: int = 0
    clip_retried: int = 0
    unk_rows: int = 0  # rows with unk_fraction > UNK_WARN_FRACTION
    over_bound: int = 0  # rows refused by the row bound (max_chunks), counted in errors too
    reused: int = 0  # rows whose outputs were copied, not computed (docscore.batch.reuse), counted in rows too

    def add(self, other: "WindowStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Prepared:
    """One tokenised window, ready for inference."""

    table: pa.Table  # the window's id / passthrough columns (the text is dropped once tokenised)
    errors: list  # per row: None or why the row cannot be scored
    seq_row: np.ndarray  # (S,) row of each sequence, ascending (a row's chunks are consecutive)
    seq_len: np.ndarray  # (S,) tokens per sequence
    batches: list[MicroBatch]
    feeds: list[dict]  # one feed per micro-batch
    stats: WindowStats = field(default_factory=WindowStats)
    unk: np.ndarray | None = None  # (rows,) unk_fraction per row, NaN for error rows


def resolve_variant(bundle: Bundle, device: str, requested: str | None, threads: int | None = None) -> str:
    """The variant to run: the one asked for (it must exist), else the fastest usable one measured on this CPU
    (:mod:`docscore.runtime.choose`)."""
    if requested:
        bundle.variant_path(requested)  # raises BundleError naming the variants held
        entry = bundle.variants[requested]
        if not entry.get("verified"):
            note = entry.get("note", "")
            log.warning("variant %s did not pass the parity gate at export %s; scoring with it anyway",
                        requested, f"({note})" if note else "")
        if entry.get("batch_dependent"):
            log.warning("variant %s is batch-dependent: a row's scores change with the rows it is batched with, the "
                        "token budget and the file layout (exported with --allow-batch-dependent)", requested)
        return requested
    from docscore.runtime.choose import choose_variant

    return choose_variant(bundle, device, threads)


class Scorer:
    """Scores Arrow batches with one bundle; callable, picklable as ``(bundle path, options)``.

    Args:
        bundle: a bundle directory (hash-checked when first used) or a loaded :class:`Bundle`.
        options: how to score; only the scoring fields matter here (columns, device, variant, batching,
            long documents).
    """

    def __init__(self, bundle: str | Path | Bundle, options: ScoreOptions | None = None):
        self._bundle = bundle if isinstance(bundle, Bundle) else None
        self.bundle_path = Path(bundle.path if isinstance(bundle, Bundle) else bundle)
        self.options = options or ScoreOptions()
        self._engine = None
        self._tokenizer = None
        self._variant: str | None = None

    def __getstate__(self) -> dict:
        return {"bundle_path": str(self.bundle_path), "options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["bundle_path"], state["options"])

    # --- set-up -----------------------------------------------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        if self._bundle is None:
            self._bundle = load_bundle(self.bundle_path)
        return self._bundle

    @property
    def spec(self):
        return self.bundle.spec

    @property
    def variant(self) -> str:
        if self._variant is None:
            self._variant = resolve_variant(self.bundle, self.options.device, self.options.variant,
                                            self.options.threads)
        return self._variant

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.head.labels

    def load(self, background: bool = False) -> "Scorer":
        """Check the options against the bundle, load the tokenizer and start the session (device checked).

        ``background``: an OpenVINO variant compiles in a thread while the caller goes on (reading, tokenising);
        the first :meth:`infer` waits for it."""
        if self._engine is not None:
            return self
        opts, spec = self.options, self.spec
        tok = self.bundle.tokenizer(truncate=True)
        specials = tok.num_special_tokens_to_add(False)
        if opts.long_docs == "chunk":
            room = spec.max_length - specials
            if not 0 <= opts.chunk_overlap < room:
                raise ConfigError(
                    f"chunk_overlap must be between 0 and {room - 1} for this bundle (max_length {spec.max_length} "
                    f"minus {specials} special tokens), got {opts.chunk_overlap}"
                )
            tok.enable_truncation(spec.max_length, stride=opts.chunk_overlap)
        self._clip_budget = 0
        self._provable = tokenizer_splits_on_spaces(tok)
        if opts.long_docs == "truncate" and opts.clip_chars_per_token and self._provable:
            self._clip_budget = opts.clip_chars_per_token * spec.max_length
        self._probe = None
        if opts.long_docs == "chunk":  # counts the tokens of the first part of a row over the bound
            self._probe = self.bundle.tokenizer(truncate=False)
        self._check_output_names()
        variant = self.variant
        entry = self.bundle.variants[variant]
        self._engine = open_engine(self.bundle.variant_path(variant), runtime=entry.get("runtime", "onnxruntime"),
                                   precision=entry.get("precision", "f32"), device=opts.device,
                                   threads=opts.threads, io_binding=opts.io_binding, arena=opts.arena,
                                   output_name=spec.output_name, background=background)
        self._tokenizer = tok
        self._unk_id = unk_id(tok)
        log.info("scoring with variant %s of %s (%s, max_length %d)", variant, self.bundle_path,
                 spec.head.problem_type, spec.max_length)
        return self

    def close(self) -> None:
        """Wait for a model still compiling in the background (an OpenVINO variant) that no row needed: a
        compiling thread left running when the interpreter exits aborts the process. A compile error is logged
        (nothing was scored with the model)."""
        ready = getattr(self._engine, "ready", None)
        if ready is None:
            return
        try:
            ready()
        except Exception as e:  # noqa: BLE001 - no row used the model; the next run that needs it fails loudly
            log.warning("%s", e)

    def _check_output_names(self) -> None:
        copied = set(self.options.output_columns())
        clash = copied & set(self._score_names())
        if clash:
            raise ConfigError(f"input columns {sorted(clash)} would clash with output columns of the same name; "
                              "rename them or leave them out of --id-column/--passthrough")

    def _score_names(self) -> list[str]:
        names = ["label", "score"]
        if self.spec.head.problem_type == "multi_label":
            names.append("labels")
        return names + [SCORE_PREFIX + lab for lab in self.labels] + ["num_tokens", "num_chunks", "unk_fraction",
                                                                       "error"]

    # --- schema -----------------------------------------------------------------------------------------------

    def check_columns(self, schema: pa.Schema, path=None) -> None:
        """Raise :class:`InputDataError` naming the columns present when a needed column is missing."""
        needed = [self.options.text_column, *self.options.output_columns()]
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise InputDataError(
                f"column(s) {missing} not found; the file has columns {schema.names}. "
                "Pick the text column with --text-column (and check --id-column / --passthrough)",
                path=path, column=missing[0],
            )

    def input_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.options.output_columns(), self.options.text_column]))

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The output schema for inputs of ``input_schema`` (also the schema of an empty input's output)."""
        return pa.schema([input_schema.field(c) for c in self.options.output_columns()] + list(self.score_schema()))

    def score_schema(self) -> pa.Schema:
        """The output columns the model decides (every output column but the id and passthrough ones)."""
        fields = [pa.field("label", pa.string()), pa.field("score", pa.float32())]
        if self.spec.head.problem_type == "multi_label":
            fields.append(pa.field("labels", pa.list_(pa.string())))
        fields += [pa.field(SCORE_PREFIX + lab, pa.float32()) for lab in self.labels]
        fields += [pa.field("num_tokens", pa.int32()), pa.field("num_chunks", pa.int32()),
                   pa.field("unk_fraction", pa.float32()), pa.field("error", pa.string())]
        return pa.schema(fields)

    # --- the three stages -------------------------------------------------------------------------------------

    def window_lengths(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Characters each row contributes to a window (clipped in truncate mode, at most the row bound)."""
        return char_lengths(table.column(self.options.text_column), cap=self._clip_cap())

    @property
    def max_row_chars(self) -> int:
        """The most characters of one row handed to the tokenizer (:func:`~docscore.batch.textprep.row_char_bound`)."""
        return row_char_bound(self.options.max_chunks, self.spec.max_length)

    def _clip_cap(self) -> int:
        if self.options.long_docs == "truncate" and self.options.clip_chars_per_token:
            return min(self.options.clip_chars_per_token * self.spec.max_length, self.max_row_chars)
        return self.max_row_chars

    def windows(self, table: pa.Table | pa.RecordBatch) -> Iterator[pa.Table]:
        """Cut a table into sort windows (``sort_window`` rows or ``window_max_chars`` characters)."""
        from docscore.batch.windows import cut_windows

        yield from cut_windows([table], self.window_lengths, self.options.sort_window, self.options.window_max_chars)

    def prepare(self, table: pa.Table | pa.RecordBatch) -> Prepared:
        """Check, clip and tokenise one window, then plan its inference batches and build their feeds."""
        self.load()
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        opts, spec = self.options, self.spec
        texts, errors = text_values(table.column(opts.text_column), max_chars=self.max_row_chars)
        table = table.select(list(opts.output_columns()))  # the text is no longer needed: free it with the window
        valid = [i for i, e in enumerate(errors) if e is None]
        clip = ClipStats()
        if opts.long_docs == "truncate":
            encs = encode_truncated(self._tokenizer, [texts[i] for i in valid], spec.max_length, self._clip_budget,
                                    clip, max_chars=self.max_row_chars, provable=self._provable)
            over = [no_cut_within(opts.max_chunks, spec.max_length) if e is None else None for e in encs]
        else:
            encs, over = encode_chunked(self._tokenizer, self._probe, [texts[i] for i in valid], spec.max_length,
                                        opts.chunk_overlap, opts.max_chunks, self._provable)
        del texts
        ids, type_ids, seq_row = [], [], []
        unk = np.full(table.num_rows, np.nan, dtype=np.float32)
        over_bound = 0
        for i, enc, why in zip(valid, encs, over):
            if why is not None:
                errors[i] = why
                over_bound += 1
                continue
            if num_content_tokens(enc) == 0:
                errors[i] = EMPTY_TEXT  # e.g. only whitespace or characters the normaliser removes
                continue
            pieces = [enc] if opts.long_docs == "truncate" else [enc, *enc.overflowing]
            unk[i] = unk_fraction(pieces, self._unk_id)
            for piece in pieces:
                ids.append(piece.ids)
                type_ids.append(piece.type_ids)
                seq_row.append(i)
        seq_len = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = plan_batches(seq_len, opts.token_budget, opts.max_batch_rows, spec.max_length)
        feeds = [pad_feed([ids[j] for j in mb.index], [type_ids[j] for j in mb.index], mb.length,
                          spec.input_names, self.bundle.pad_id) for mb in batches]
        stats = WindowStats(rows=table.num_rows, errors=sum(e is not None for e in errors), sequences=len(ids),
                            tokens=int(seq_len.sum()), slots=sum(mb.slots for mb in batches),
                            clipped=clip.clipped, clip_retried=clip.retried,
                            unk_rows=int(np.sum(unk > UNK_WARN_FRACTION)), over_bound=over_bound)
        if over_bound:
            log.warning("%d of %d rows are over the row bound of --max-chunks %d and were not scored: %s",
                        over_bound, table.num_rows, opts.max_chunks, next(e for e in over if e))
        if stats.unk_rows:
            log.warning("%d of %d rows are mostly unknown tokens (unk_fraction > %.1f): their labels carry no "
                        "information; see the unk_fraction column", stats.unk_rows, table.num_rows,
                        UNK_WARN_FRACTION)
        return Prepared(table, errors, np.asarray(seq_row, dtype=np.int64), seq_len, batches, feeds, stats, unk)

    def infer(self, prepared: Prepared) -> np.ndarray:
        """Logits for every sequence of the window, in sequence order: ``(S, num_labels)`` float32."""
        self.load()
        out = np.zeros((len(prepared.seq_len), len(self.labels)), dtype=np.float32)
        for mb, feed in zip(prepared.batches, prepared.feeds):
            out[mb.index] = self._engine.run(feed)  # (B, num_labels) back in sequence order
        return out

    def assemble(self, prepared: Prepared, logits: np.ndarray) -> pa.Table:
        """The output rows of the window, in input order (see the module docstring for the columns)."""
        opts, head = self.options, self.spec.head
        n, k = prepared.table.num_rows, len(self.labels)
        rows, starts = np.unique(prepared.seq_row, return_index=True)  # scored rows, first sequence of each
        counts = np.diff(np.append(starts, len(prepared.seq_row)))
        if len(rows):
            if opts.chunk_agg == "max":
                agg = np.maximum.reduceat(logits, starts, axis=0)
            else:
                agg = np.add.reduceat(logits.astype(np.float64), starts, axis=0) / counts[:, None]
            scores = scores_from_logits(agg, head.problem_type)  # (R, K)
        else:
            scores = np.zeros((0, k), dtype=np.float32)
        scored = np.zeros(n, dtype=bool)
        scored[rows] = True
        mask = ~scored  # arrow null mask: True = null

        per_label = np.zeros((n, k), dtype=np.float32)
        per_label[rows] = scores
        if head.problem_type == "regression":
            label = pa.nulls(n, pa.string())
            best = per_label[:, 0]
        else:
            idx = np.zeros(n, dtype=np.int64)
            idx[rows] = predicted_index(scores, head.problem_type)
            names = np.asarray(self.labels, dtype=object)[idx]
            label = pa.array(names, pa.string(), mask=mask)
            best = per_label[np.arange(n), idx]
        tokens = np.zeros(n, dtype=np.int32)
        tokens[rows] = np.add.reduceat(prepared.seq_len, starts) if len(rows) else []
        chunks = np.zeros(n, dtype=np.int32)
        chunks[rows] = counts

        cols = {c: prepared.table.column(c) for c in opts.output_columns()}
        cols["label"] = label
        cols["score"] = pa.array(best, pa.float32(), mask=mask)
        if head.problem_type == "multi_label":
            above = per_label > opts.multi_label_threshold
            cols["labels"] = pa.array(
                [None if mask[r] else [self.labels[j] for j in np.flatnonzero(above[r])] for r in range(n)],
                pa.list_(pa.string()),
            )
        for j, lab in enumerate(self.labels):
            cols[SCORE_PREFIX + lab] = pa.array(per_label[:, j], pa.float32(), mask=mask)
        cols["num_tokens"] = pa.array(tokens, pa.int32(), mask=mask)
        cols["num_chunks"] = pa.array(chunks, pa.int32(), mask=mask)
        unk = prepared.unk if prepared.unk is not None else np.full(n, np.nan, dtype=np.float32)
        cols["unk_fraction"] = pa.array(unk, pa.float32(), mask=mask | np.isnan(unk))
        cols["error"] = pa.array(prepared.errors, pa.string())
        schema = self.output_schema(prepared.table.schema)
        return pa.Table.from_arrays([_combine(cols[f.name]) for f in schema], schema=schema)

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """Score a batch (any number of rows) and return its output rows in the same order."""
        self.load()
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        self.check_columns(batch.schema)
        batch = batch.select(self.input_columns())
        parts = []
        for window in self.windows(batch):
            prepared = self.prepare(window)
            parts.append(self.assemble(prepared, self.infer(prepared)))
        if not parts:
            return self.output_schema(batch.schema).empty_table()
        return pa.concat_tables(parts)


def _combine(col):
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
