"""Score reuse: a row whose text this output scored before is copied, not sent to the model again.

The contract makes this exact: a row's output columns (``label``, ``score``, ``score_<label>``, ``num_tokens``,
``num_chunks``, ``unk_fraction``, ``error``, ...) are a function of its text, the bundle and the meaning options,
bit for bit, and an output directory holds one bundle and one set of meaning options (a change is refused or, with
``--overwrite``, discards everything). So a night after a compaction, a re-partitioning, a rename, an append or a
partial edit infers only the texts it has never seen, and the outputs are the bytes a fresh run writes.

What is stored: beside each finished output, its *score file* (:mod:`docscore.batch.scorefiles`): the text
digest and the score columns of each of its rows, tagged with the bundle and meaning options it was written for. A
run reads every score file whose tag matches, so a killed night's work (a rescored file published, a pruned input's
scores) still serves the rerun; the files no manifest entry names are removed when a run ends, never in the middle:
the index of a run refers only to files that stay until it ends.

What is held in memory: :class:`ReuseIndex`, the keys of those score files, sorted, with where each row is (24 bytes per cached row: two uint64 halves of the key, a file number and a
row number); the score columns are read from the files on demand, a row group at a time. Within a run,
:class:`RunMemo` remembers up to :data:`MEMO_ROWS` texts scored earlier in the run, so duplicates (boilerplate,
re-sent mails) are inferred once.

Null texts and texts of other types are not keyed (their outputs are cheap errors, computed every time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from docscore.batch.scorefiles import Keys, ScoreFileReader, text_keys
from docscore.storage import Location

log = logging.getLogger(__name__)

MEMO_ROWS = 1 << 18  # texts first scored in this run whose outputs are kept for duplicates later in the run


class ReuseIndex:
    """Sorted keys of the cached rows and where each lives: 24 bytes per row."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, src: np.ndarray, row: np.ndarray):
        order = np.lexsort((lo, hi))
        self.hi, self.lo = hi[order], lo[order]
        self.src, self.row = src[order].astype(np.uint32), row[order].astype(np.uint32)

    @classmethod
    def empty(cls) -> "ReuseIndex":
        z = np.zeros(0, dtype=np.uint64)
        return cls(z, z, z.astype(np.uint32), z.astype(np.uint32))

    def __len__(self) -> int:
        return len(self.hi)

    @property
    def nbytes(self) -> int:
        return self.hi.nbytes + self.lo.nbytes + self.src.nbytes + self.row.nbytes

    def lookup(self, keys: Keys) -> np.ndarray:
        """Per row: the index position of its key, or -1 (not cached, or not keyed)."""
        n = len(self.hi)
        out = np.full(len(keys), -1, dtype=np.int64)
        if n == 0 or not len(keys):
            return out
        pos = np.searchsorted(self.hi, keys.hi, side="left")
        at = np.minimum(pos, n - 1)
        same_hi = keys.valid & (pos < n) & (self.hi[at] == keys.hi)
        hit = same_hi & (self.lo[at] == keys.lo)
        out[hit] = pos[hit]
        for i in np.flatnonzero(same_hi & ~hit).tolist():  # two keys sharing their first 8 bytes: rare
            j = int(pos[i])
            while j < n and self.hi[j] == keys.hi[i]:
                if self.lo[j] == keys.lo[i]:
                    out[i] = j
                    break
                j += 1
        return out


@dataclass
class WindowReuse:
    """How one window's rows get their outputs: computed (``infer``), copied from the store (``hits``) or from an
    earlier row of the run (``dups``)."""

    keys: Keys  # every row of the window
    infer: np.ndarray  # window rows to compute, ascending
    remember: np.ndarray  # positions within ``infer`` whose outputs the run memo keeps
    hit_rows: np.ndarray  # window rows copied from the store
    hits: pa.Table  # their score columns, in hit_rows order
    dup_rows: np.ndarray  # window rows copied from the run memo
    passthrough: pa.Table  # the window's id / passthrough columns, every row
    fresh: set  # keys first seen in this window and kept by the run memo

    @property
    def reused(self) -> int:
        return len(self.hit_rows) + len(self.dup_rows)


class RunMemo:
    """Texts first scored in this run and their outputs, for duplicates later in the run (at most ``cap``).

    The reader thread decides which keys are new and kept (:meth:`Reuse.plan`, then :meth:`accept` once the
    window is prepared, so a window that failed claims nothing); the writer thread, which sees windows in the same
    order, stores and copies the outputs (:meth:`keep`, :meth:`copy`). Each side touches only its own half, so no
    lock is needed."""

    def __init__(self, cap: int | None = None):
        self.cap = MEMO_ROWS if cap is None else cap
        self.claimed: set[bytes] = set()  # reader side
        self._where: dict[bytes, tuple[int, int]] = {}  # writer side: key -> (table, row)
        self._tables: list[pa.Table] = []

    def accept(self, fresh: set[bytes]) -> None:
        self.claimed |= fresh

    def keep(self, keys: list[bytes], scores: pa.Table | None) -> None:
        if not keys:
            return
        t = len(self._tables)
        self._tables.append(scores)
        for r, k in enumerate(keys):
            self._where[k] = (t, r)

    def copy(self, keys: list[bytes], schema: pa.Schema) -> pa.Table:
        """The kept outputs of ``keys``, in that order."""
        if not keys:
            return schema.empty_table()
        locs = np.asarray([self._where[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        pieces, where = [], []
        for t in np.unique(locs[:, 0]).tolist():
            sel = np.flatnonzero(locs[:, 0] == t)
            pieces.append(self._tables[t].take(pa.array(locs[sel, 1])))
            where.append(sel)
        got = pa.concat_tables(pieces)
        return got.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))


class Reuse:
    """One run's reuse: the index of what the output scored before, its score files, and the run memo."""

    def __init__(self, files: ScoreFileReader, index: ReuseIndex, load_s: float = 0.0):
        self.files, self.index, self.schema = files, index, files.schema
        self.memo = RunMemo()
        self.load_s = load_s

    @classmethod
    def open(cls, out: Location, paths: list[str], scores: pa.Schema, tag: str) -> "Reuse":
        """Read the keys of the score files ``paths`` (relative to ``out``) into an index.

        Args:
            scores: the score columns' schema of this run's outputs.
            tag: :func:`~docscore.batch.scorefiles.output_tag` of this run: a file written for another bundle or
                other meaning options, or with other columns, is not used.
        """
        t0 = time.perf_counter()
        files = ScoreFileReader(out, paths, scores, tag)
        his, los, srcs, rows = [], [], [], []
        for i in range(len(paths)):
            keys = files.read_keys(i)
            if keys is None:
                continue
            his.append(keys[:, 0])
            los.append(keys[:, 1])
            srcs.append(np.full(len(keys), i, dtype=np.uint32))
            rows.append(np.arange(len(keys), dtype=np.uint32))
        index = ReuseIndex(*(np.concatenate(x) for x in (his, los, srcs, rows))) if his else ReuseIndex.empty()
        load_s = time.perf_counter() - t0
        if paths:
            log.info("reuse: %d cached row(s) from %d score file(s), index %.1f MiB, loaded in %.2f s", len(index),
                     len(paths), index.nbytes / 2**20, load_s)
        return cls(files, index, load_s)

    def plan(self, window: pa.Table, text_column: str, passthrough: list[str]) -> WindowReuse:
        """Reader side: which rows of ``window`` to compute and which to copy (and fetch the store's copies)."""
        keys = text_keys(window.column(text_column))
        found = self.index.lookup(keys)
        infer, remember, hit_rows, dup_rows = [], [], [], []
        claimed, fresh, room = self.memo.claimed, set(), self.memo.cap - len(self.memo.claimed)
        for i in range(len(keys)):
            if found[i] >= 0:
                hit_rows.append(i)
                continue
            if keys.valid[i]:
                k = keys.key_bytes(i)
                if k in claimed or k in fresh:
                    dup_rows.append(i)
                    continue
                if len(fresh) < room:
                    fresh.add(k)
                    remember.append(len(infer))
            infer.append(i)
        hit_rows = np.asarray(hit_rows, dtype=np.int64)
        pos = found[hit_rows]
        hits = self.files.fetch(self.index.src[pos], self.index.row[pos])
        return WindowReuse(keys, np.asarray(infer, dtype=np.int64), np.asarray(remember, dtype=np.int64),
                           hit_rows, hits, np.asarray(dup_rows, dtype=np.int64), window.select(passthrough), fresh)

    def accept(self, plan: WindowReuse) -> None:
        """Reader side, once the window's computed rows are prepared: its new texts count as seen in this run."""
        self.memo.accept(plan.fresh)

    def combine(self, plan: WindowReuse, computed: pa.Table) -> pa.Table:
        """Writer side: the window's output rows, in input order, from the computed rows (the scorer's output for
        ``plan.infer``), the store's copies and the memo's."""
        scores = computed.select(self.schema.names)
        keys = plan.keys
        self.memo.keep([keys.key_bytes(int(plan.infer[j])) for j in plan.remember.tolist()],
                       scores.take(pa.array(plan.remember)) if len(plan.remember) else None)
        if not plan.reused:
            merged = scores
        else:
            dups = self.memo.copy([keys.key_bytes(i) for i in plan.dup_rows.tolist()], self.schema)
            parts = [t.cast(self.schema) for t in (scores, plan.hits, dups) if t.num_rows]
            order = np.concatenate([plan.infer, plan.hit_rows, plan.dup_rows])
            merged = pa.concat_tables(parts).take(pa.array(np.argsort(order, kind="stable")))
        passthrough = plan.passthrough
        return pa.Table.from_arrays([*passthrough.columns, *merged.columns],
                                    names=[*passthrough.column_names, *merged.column_names])
