"""What one scoring run did (:class:`RunSummary`, written to ``_docscore_summary.json`` and printed by the CLI)
and the progress callbacks a front end may pass in (:class:`Progress`). Every engine and the committer count into
the same summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docscore.batch.scorer import WindowStats


@dataclass
class RunSummary:
    """What one ``score_files`` call did. Rates count the rows scored in this call (skipped shards excluded)."""

    rows: int = 0  # rows written
    errors: int = 0  # rows with a non-null ``error``
    files: int = 0  # shards scored in this call
    files_skipped: int = 0  # shards already done by an earlier run
    files_failed: int = 0  # shards that could not be read
    failed: list = field(default_factory=list)  # [{"path": ..., "error": ...}]
    scored: list = field(default_factory=list)  # output paths (relative to OUT) written in this call
    skipped: list = field(default_factory=list)  # output paths already done and unchanged
    changed: list = field(default_factory=list)  # [{"path", "output", "action": rescored|refused|kept}]
    deleted: list = field(default_factory=list)  # [{"input", "output", "action": pruned|kept}]
    schema_drift: list = field(default_factory=list)  # [{"path", "columns": {name: type}, "expected": {...}}]
    output_rows: int = 0  # rows in the outputs of this call's inputs (scored now or earlier)
    output_errors: int = 0  # of which with a per-row error
    max_error_rate: float = 1.0
    cleaned: int = 0  # files left by killed runs and removed at the start
    sequences: int = 0  # model inputs (rows, or chunks in chunk mode)
    tokens: int = 0  # real tokens fed to the model
    slots: int = 0  # padded token slots fed to the model
    clipped: int = 0  # texts tokenised from a clipped prefix
    unk_rows: int = 0  # rows whose tokens are mostly the unknown token (unk_fraction > 0.5)
    reused_rows: int = 0  # rows whose outputs were copied (scored by an earlier night, or earlier in this run)
    reuse_index_rows: int = 0  # cached rows the run could reuse (keys read at the start)
    reuse_index_bytes: int = 0  # the memory their index takes
    reuse_load_s: float = 0.0  # the time reading it took
    wall_s: float = 0.0
    # Engine counters (empty for the local engine). Ray: ``workers``, ``pieces`` sent, ``max_blocks_ahead`` (the
    # bound on pieces sent and not yet committed), ``peak_outstanding`` (the most at once) and ``peak_ahead`` (the
    # most finished pieces held behind an unfinished older one).
    engine_stats: dict = field(default_factory=dict)
    variant: str = ""
    bundle_sha256: str = ""
    output_dir: str = ""

    @property
    def error_rate(self) -> float:
        """Share of the output rows of this call's inputs that carry a per-row error."""
        return self.output_errors / self.output_rows if self.output_rows else 0.0

    @property
    def problems(self) -> list[str]:
        """Why the run is not healthy (empty when it is)."""
        out = []
        if self.files_failed:
            out.append(f"{self.files_failed} file(s) failed")
        refused = sum(c["action"] == "refused" for c in self.changed)
        if refused:
            out.append(f"{refused} changed input(s) refused (--on-change refuse): their outputs are stale")
        kept = sum(d["action"] == "kept" for d in self.deleted)
        if kept:
            out.append(f"{kept} deleted input(s) still have outputs (pass --prune to remove them)")
        if self.error_rate > self.max_error_rate:
            out.append(f"row error rate {self.error_rate:.1%} is above --max-error-rate {self.max_error_rate:.1%}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def inferred_rows(self) -> int:
        """Rows computed by this run (tokenised and, unless an error row, sent to the model)."""
        return self.rows - self.reused_rows

    @property
    def pad_fraction(self) -> float:
        """Share of the padded slots fed to the model that were padding."""
        return 1.0 - self.tokens / self.slots if self.slots else 0.0

    @property
    def docs_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def add(self, stats: WindowStats) -> None:
        self.rows += stats.rows
        self.errors += stats.errors
        self.sequences += stats.sequences
        self.tokens += stats.tokens
        self.slots += stats.slots
        self.clipped += stats.clipped
        self.unk_rows += stats.unk_rows
        self.reused_rows += stats.reused

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(pad_fraction=round(self.pad_fraction, 6), docs_per_s=round(self.docs_per_s, 3),
                 tokens_per_s=round(self.tokens_per_s, 1), ok=self.ok, error_rate=round(self.error_rate, 6),
                 problems=self.problems, inferred_rows=self.inferred_rows,
                 reuse_load_s=round(self.reuse_load_s, 3), files_changed=len(self.changed), files_deleted=len(self.deleted))
        d["wall_s"] = round(self.wall_s, 3)
        return d


class Progress:
    """Progress callbacks for a front end (the CLI's tqdm bars); library code never prints."""

    def start(self, files: int, rows: int | None) -> None: ...

    def rows(self, n: int) -> None: ...

    def file_done(self, rel: str, status: str) -> None: ...
