"""The options of a scoring run, shared by ``docscore score`` and the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from docscore.errors import ConfigError

LONG_DOCS = ("truncate", "chunk")
CHUNK_AGGS = ("mean", "max")
ON_CHANGE = ("rescore", "refuse", "keep")


@dataclass(frozen=True)
class ScoreOptions:
    """How to read, batch, score and write documents.

    Args:
        text_column: the column holding the document text; a dotted path (``meta.body``) names a field of a
            struct column. A ``binary`` column is decoded as UTF-8 (invalid bytes: a per-row error).
        id_column: a column copied to the output first (e.g. ``doc_id``); ``None`` copies none. Output rows are
            in input order either way, so the row position is always an id.
        passthrough: more input columns copied to the output unchanged (hive partition keys such as ``date`` of
            ``date=2026-11-27/`` folders and dotted struct paths included).
        device: ``cpu`` or ``cuda``. ``cuda`` fails loudly if ONNX Runtime cannot actually run on the GPU.
        variant: the bundle variant to run (``fp32``, ``optimized``, ``int8``, ``fp16``); ``None`` picks the
            fastest verified one for the device (CPU: int8 > optimized > fp32; CUDA: fp16 > optimized > fp32).
        threads: ONNX Runtime intra-op threads on CPU; ``None`` lets ORT use every physical core.
        io_binding: bind inputs/outputs explicitly (``session.io_binding()``); ``None`` means on for CUDA, off
            for CPU, where it gains nothing.
        arena: keep ORT's CPU memory arena (faster); turn off to keep peak memory flat on huge batches.
        token_budget: padded tokens per inference batch (rows x padded length), e.g. 32 x 256. Batches are cut by
            this budget, not by a row count, so short documents travel in large batches.
        max_batch_rows: upper bound on rows per inference batch, whatever their length.
        sort_window: documents sorted together by token length before batching (then put back in input order).
            Larger windows pad less and hold more in memory.
        window_max_chars: a sort window also closes once its texts hold this many characters (after clipping),
            so windows of book-length documents stay small in chunk mode.
        long_docs: ``truncate`` keeps the first ``max_length`` tokens; ``chunk`` scores the whole document in
            overlapping windows of ``max_length`` tokens and aggregates their logits.
        chunk_overlap: tokens shared by consecutive chunks (``chunk`` mode); must be below the content tokens of
            one window (``max_length`` minus the special tokens).
        chunk_agg: ``mean`` or ``max`` of the chunk logits, per label, before softmax/sigmoid.
        max_chunks: the row bound: a row's memory and time are those of at most this many windows of
            ``max_length`` tokens. In ``chunk`` mode a row needing more windows gets a per-row ``error`` naming the
            bound and is not scored. In both modes at most ``max_chunks x max_length x 16`` characters of a row are
            tokenised (262,144 for the defaults and ``max_length`` 256); a chunk-mode row longer than that, or a
            truncate-mode row with no word boundary after its first ``max_length`` tokens within it, gets the
            error too. Every row that is scored has exactly the tokens of its whole text. 64 windows of 256 tokens
            hold ~14k tokens (a 40-page report), two inference batches of the default token budget.
        clip_chars_per_token: in ``truncate`` mode, texts are cut to ``max_length`` x this many characters before
            tokenising (a check on token offsets falls back to more text whenever the cut could change the tokens
            kept). ``0`` tokenises whole texts.
        multi_label_threshold: multi-label outputs list every label whose score is above this.
        checkpoint_rows: input rows per committed part of one shard: a kill loses at most this many rows of work.
        read_batch_rows: rows per Parquet record batch read (memory per read, not a scoring unit).
        queue_depth: prepared windows buffered between the tokenising, inference and writing threads.
        overwrite: discard earlier outputs in the output directory when the bundle or the options changed,
            instead of refusing.
        fail_fast: stop at the first unreadable or malformed input file instead of scoring the others first.
        on_change: an input whose content changed since it was scored: ``rescore`` (default) replaces its
            output; ``refuse`` keeps the old output and fails the run (exit 1, no ``_SUCCESS``); ``keep`` keeps
            the old output and succeeds. Either way the other files are scored and the decision is reported.
        prune: remove the output (and manifest entry) of an input that was deleted. Without it the output is
            kept, reported, and the run fails (exit 1, no ``_SUCCESS``): stale rows are never silently served.
        max_error_rate: the run fails (exit 1, no ``_SUCCESS``) when more than this share of the output rows of
            this run's inputs have a per-row ``error`` (null/empty text, bad type, invalid UTF-8).
        reuse: copy the outputs of texts this output scored before (earlier nights, earlier rows of this run)
            instead of inferring them again (:mod:`docscore.batch.reuse`); the outputs are the same bytes either way.
            ``False`` neither uses nor writes the score files that make this possible.
        s3_endpoint: the endpoint of an S3-compatible store (``http://host:9000``) for ``s3://`` URIs that name
            none in their ``endpoint_override`` query parameter; default: ``AWS_ENDPOINT_URL``, else AWS.
    """

    text_column: str = "text"
    id_column: str | None = None
    passthrough: tuple[str, ...] = ()
    device: str = "cpu"
    variant: str | None = None  # None: fastest verified variant for the device
    threads: int | None = None  # None: ORT default (all physical cores)
    io_binding: bool | None = None  # None: on for cuda, off for cpu
    arena: bool = True
    token_budget: int = 8192  # 32 rows x 256 tokens
    max_batch_rows: int = 256
    sort_window: int = 2048
    window_max_chars: int = 4_000_000
    long_docs: str = "truncate"
    chunk_overlap: int = 32
    chunk_agg: str = "mean"
    max_chunks: int = 64  # chunk windows per row at most; also bounds the characters tokenised per row
    clip_chars_per_token: int = 8  # English WordPiece averages ~4-5 chars per token; the check covers the rest
    multi_label_threshold: float = 0.5
    checkpoint_rows: int = 100_000
    read_batch_rows: int = 4096
    queue_depth: int = 4
    overwrite: bool = False
    fail_fast: bool = False
    on_change: str = "rescore"
    prune: bool = False
    max_error_rate: float = 0.05
    reuse: bool = True
    s3_endpoint: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passthrough", tuple(self.passthrough or ()))
        if self.long_docs not in LONG_DOCS:
            raise ConfigError(f"long_docs must be one of {LONG_DOCS}, got {self.long_docs!r}")
        if self.chunk_agg not in CHUNK_AGGS:
            raise ConfigError(f"chunk_agg must be one of {CHUNK_AGGS}, got {self.chunk_agg!r}")
        if self.on_change not in ON_CHANGE:
            raise ConfigError(f"on_change must be one of {ON_CHANGE}, got {self.on_change!r}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"max_error_rate must be between 0 and 1, got {self.max_error_rate}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        for name in ("token_budget", "max_batch_rows", "sort_window", "window_max_chars", "checkpoint_rows",
                     "read_batch_rows", "queue_depth", "max_chunks"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")
        if self.clip_chars_per_token < 0:
            raise ConfigError(f"clip_chars_per_token must be >= 0, got {self.clip_chars_per_token}")

    def replace(self, **changes) -> "ScoreOptions":
        return replace(self, **changes)

    def output_columns(self) -> tuple[str, ...]:
        """The input columns copied to the output: the id column, then the passthrough columns."""
        cols = ([self.id_column] if self.id_column else []) + list(self.passthrough)
        return tuple(dict.fromkeys(cols))

    def fingerprint(self, variant: str) -> dict:
        """The options a finished output depends on, recorded in the run manifest. A rerun with different
        values is refused (or, with ``overwrite``, starts over), so resumed shards never mix two settings."""
        d = asdict(self)
        for volatile in ("overwrite", "fail_fast", "queue_depth", "read_batch_rows", "extra", "arena", "io_binding",
                         "on_change", "prune", "max_error_rate", "s3_endpoint", "reuse"):
            d.pop(volatile)
        d["variant"] = variant
        d["passthrough"] = list(self.passthrough)
        return d
