"""Score files: what :mod:`docscore.batch.reuse` keeps beside each finished output, and how they are written and
read.

``OUT/_docscore/reuse/<rel>.<tag>.scores`` is a Parquet file (never named ``*.parquet``, below a ``_`` folder: no
reader's glob counts it as data) with one row per output row whose text is a string or binary value: ``key``, the
16-byte BLAKE2b digest of the text's bytes (UTF-8 for strings), then the output's score columns (every output
column but the id and passthrough columns). The committer writes it part by part next to the output's parts
(:class:`ScoreFileWriter`) and publishes it before the shard's ``done`` journal event, which names it; each publish
gets a fresh name, so the file an earlier entry names stays readable until the run that replaced it ends. Its
Parquet metadata carries :func:`output_tag` (the bundle's sha256, the variant and the meaning options): a file
written for anything else is never read back. Files no manifest entry names are removed by :func:`clean` when a run
ends (a killed run's stay for the rerun to use).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from docscore import storage
from docscore.storage import Location

log = logging.getLogger(__name__)

REUSE_DIR = "_docscore/reuse"  # below OUT; "_" folders are skipped by every reader's glob
SUFFIX = ".scores"  # never ".parquet": a reader's **/*.parquet glob never counts a score file as data
KEY = "key"
KEY_TYPE = pa.binary(16)
TAG_KEY = b"docscore.output_tag"  # the file's Parquet metadata: output_tag() of the run that wrote it
ROW_GROUP_ROWS = 8192  # rows per row group of a score file: the unit read back on a hit
CACHED_GROUPS = 16  # decoded row groups kept (a compacted file's rows come from a few old files at a time)


def score_file_name(rel: str) -> str:
    """A fresh score-file path (relative to OUT) for the output ``rel``: each publish gets its own name, so the file
    an earlier night's entry names stays readable until this run ends."""
    return f"{REUSE_DIR}/{rel}.{uuid.uuid4().hex[:12]}{SUFFIX}"


@dataclass(frozen=True)
class Keys:
    """The text digests of a table's rows: ``hi``/``lo`` halves (uint64) and ``valid`` (False: not keyed)."""

    hi: np.ndarray
    lo: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    def take(self, index: np.ndarray) -> "Keys":
        return Keys(self.hi[index], self.lo[index], self.valid[index])

    def key_bytes(self, i: int) -> bytes:
        return int(self.hi[i]).to_bytes(8, "little") + int(self.lo[i]).to_bytes(8, "little")

    def arrow(self) -> pa.Array:
        """The valid rows' keys as a ``binary(16)`` array."""
        both = np.stack([self.hi[self.valid], self.lo[self.valid]], axis=1).astype("<u8")
        return pa.Array.from_buffers(KEY_TYPE, int(self.valid.sum()), [None, pa.py_buffer(both.tobytes())])


def text_keys(column: pa.ChunkedArray | pa.Array) -> Keys:
    """BLAKE2b-128 of each text's bytes (UTF-8 for strings, the raw bytes for binary columns)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    hi, lo = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
    valid = np.zeros(n, dtype=bool)
    typ = column.type
    if pa.types.is_dictionary(typ):
        column, typ = column.cast(typ.value_type), typ.value_type
    if pa.types.is_string_view(typ):
        column, typ = column.cast(pa.string()), pa.string()
    if pa.types.is_binary_view(typ):
        column, typ = column.cast(pa.binary()), pa.binary()
    if pa.types.is_string(typ) or pa.types.is_binary(typ) or pa.types.is_large_string(typ):
        column = column.cast(pa.large_binary())
    elif not pa.types.is_large_binary(typ):
        return Keys(hi, lo, valid)
    if n == 0:
        return Keys(hi, lo, valid)
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=column.offset + n + 1)[column.offset:]
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    present = column.is_valid().to_numpy(zero_copy_only=False)
    digests = bytearray(16 * n)
    blake = hashlib.blake2b
    for i in np.flatnonzero(present).tolist():
        digests[16 * i:16 * i + 16] = blake(data[offsets[i]:offsets[i + 1]], digest_size=16).digest()
    both = np.frombuffer(bytes(digests), dtype="<u8").reshape(n, 2)
    return Keys(both[:, 0].copy(), both[:, 1].copy(), present.astype(bool))




def is_score_file(rel) -> bool:
    """Whether a manifest's ``reuse`` value names a score file this output may read: below ``_docscore/reuse/``,
    no ``..``, ``.`` or empty segment, no backslash (a hostile manifest cannot send a read outside OUT)."""
    if not isinstance(rel, str) or not rel.startswith(REUSE_DIR + "/") or not rel.endswith(SUFFIX) or "\\" in rel:
        return False
    return all(seg not in ("", ".", "..") for seg in rel.split("/"))


def score_schema(output_schema: pa.Schema, copied: tuple[str, ...]) -> pa.Schema:
    """The score columns of an output: every column but the copied (id and passthrough) ones."""
    return pa.schema([f for f in output_schema if f.name not in copied])


def output_tag(header: dict) -> str:
    """What a score file must have been written for to be reused: a digest of the run manifest's bundle (sha256,
    variant) and meaning options."""
    import json

    bundle = header.get("bundle", {})
    body = json.dumps({"sha256": bundle.get("sha256"), "variant": bundle.get("variant"),
                       "options": header.get("options")}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def file_schema(scores: pa.Schema, tag: str) -> pa.Schema:
    return pa.schema([pa.field(KEY, KEY_TYPE), *scores], metadata={TAG_KEY: tag})


def listed(out: Location) -> list[str]:
    """Every score file below ``OUT/_docscore/reuse/`` (paths relative to OUT), sorted."""
    root = out.join(REUSE_DIR)
    try:
        infos = out.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return []
    rels = (REUSE_DIR + i.path[len(root):] for i in infos if i.type == pafs.FileType.File)
    return sorted(r for r in rels if is_score_file(r))


class ScoreFileReader:
    """Score files read back: their keys (:meth:`read_keys`) and, on a hit, the score columns of some rows, a row
    group at a time (the last :data:`CACHED_GROUPS` decoded groups kept)."""

    def __init__(self, out: Location, paths: list[str], scores: pa.Schema, tag: str):
        self.out, self.paths, self.schema, self.tag = out, paths, scores, tag
        self._bounds: dict[int, np.ndarray] = {}  # file -> first row of each row group, and the end
        self._cache: OrderedDict = OrderedDict()

    def read_keys(self, i: int) -> np.ndarray | None:
        """File ``i``'s keys as an ``(n, 2)`` uint64 array; None (logged) when it cannot be read or has other
        columns than this run's outputs would have."""
        rel = self.paths[i]
        try:
            with self.out.fs.open_input_file(self.out.join(rel)) as f:
                pf = pq.ParquetFile(f)
                schema = pf.schema_arrow
                if (schema.metadata or {}).get(TAG_KEY, b"").decode() != self.tag:
                    log.info("not reusing %s: written for another bundle or other options", rel)
                    return None
                if not schema.equals(file_schema(self.schema, self.tag)):
                    log.info("not reusing %s: its columns differ from this run's outputs", rel)
                    return None
                keys = pf.read(columns=[KEY]).column(KEY).combine_chunks()
                md = pf.metadata
                self._bounds[i] = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
        except (OSError, pa.ArrowException) as e:
            log.warning("not reusing %s: %s", rel, e)
            return None
        both = np.frombuffer(keys.buffers()[1], dtype="<u8", count=2 * (keys.offset + len(keys)))
        return both[2 * keys.offset:].reshape(-1, 2)

    def fetch(self, src: np.ndarray, row: np.ndarray) -> pa.Table:
        """The score columns of rows ``row`` of files ``src`` (pairwise), in that order."""
        if not len(src):
            return self.schema.empty_table()
        src, row = src.astype(np.int64), row.astype(np.int64)
        pieces, where = [], []
        for s in np.unique(src).tolist():
            sel = np.flatnonzero(src == s)
            bounds = self._bounds[s]
            group = np.searchsorted(bounds, row[sel], side="right") - 1
            for g in np.unique(group).tolist():
                in_g = sel[group == g]
                pieces.append(self._group(s, g).take(pa.array(row[in_g] - bounds[g])))
                where.append(in_g)
        got = pa.concat_tables(pieces)
        return got.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))

    def _group(self, s: int, g: int) -> pa.Table:
        key = (s, g)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with self.out.fs.open_input_file(self.out.join(self.paths[s])) as f:
            table = pq.ParquetFile(f).read_row_group(g, columns=self.schema.names)
        self._cache[key] = table
        if len(self._cache) > CACHED_GROUPS:
            self._cache.popitem(last=False)
        return table


class ScoreFileWriter:
    """One shard's score file, written part by part beside its output (driven by the committer).

    A part's file is committed into the shard's staging folder (``part-NNNNN.scores``) before the output part it
    belongs to, so a resumed shard has the score parts of its committed parts; a shard one of whose parts was
    written without keys (``--no-reuse``, the Ray engine) gets no score file.

    Args:
        staging: the output's :class:`~docscore.batch.commit.staging.Staging`.
        scores: the score columns' schema.
    """

    def __init__(self, staging, rel: str, parts: int, done: int, scores: pa.Schema, tag: str):
        self.staging, self.rel, self.parts, self.scores = staging, rel, parts, scores
        self.schema = file_schema(scores, tag)
        self.ok = all(storage.is_file(staging.fs, self._part(p)) for p in range(done))
        if not self.ok:
            log.info("%s: parts committed without score files (an earlier run with --no-reuse); this output gets "
                     "none", rel)
        self._writer: pq.ParquetWriter | None = None
        self._tmp: str | None = None
        self._single: str | None = None  # a one-part shard's closed score file, until publish()
        self._rows = 0  # keyed rows written by this run
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def _part(self, part: int) -> str:
        return self.staging.staged_file(self.rel, f"part-{part:05d}{SUFFIX}")

    def write(self, table: pa.Table, keys: Keys | None) -> None:
        """Add the keyed rows of ``table`` (output rows, in order) with ``keys`` (None: this shard gets no score
        file)."""
        if keys is None:
            self.ok = False
        if not self.ok or not table.num_rows:
            return
        rows = table.select(self.scores.names).filter(pa.array(keys.valid))
        rows = pa.Table.from_arrays([keys.arrow(), *rows.cast(self.scores).columns], schema=self.schema)
        self._pending.append(rows)
        self._pending_rows += rows.num_rows
        self._rows += rows.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        rows = pa.concat_tables(self._pending)
        if self._writer is None:
            self._tmp = self.staging.inprogress(self.rel, "scores")
            self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=self.staging.work_fs)
        self._writer.write_table(rows.slice(0, n).combine_chunks(), row_group_size=n)
        rest = rows.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _close(self) -> str | None:
        if not self.ok:
            self.abort()
            return None
        if self._pending_rows or self._writer is None:
            if self._writer is None:
                self._tmp = self.staging.inprogress(self.rel, "scores")
                self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=self.staging.work_fs)
            if self._pending_rows:
                self._flush(self._pending_rows)
        self._writer.close()
        tmp, self._writer, self._tmp = self._tmp, None, None
        return tmp

    def commit_part(self, part: int) -> None:
        """The output part ``part`` is about to be committed: commit its score part first (one-part shards keep it
        local until :meth:`publish`)."""
        tmp = self._close()
        if tmp is None:
            return
        if self.parts == 1:
            self._single = tmp  # published whole by publish()
        else:
            self.staging.commit_file(tmp, self.rel, f"part-{part:05d}{SUFFIX}")

    def publish(self) -> str | None:
        """Publish the whole score file (before the shard's done event); returns its path relative to OUT."""
        if not self.ok or self.parts == 1 and not self._rows:  # nothing to reuse
            self.abort()
            return None
        name = score_file_name(self.rel)
        if self.parts == 1:
            self.staging.publish(self._single, name)
            self._single = None
            return name
        tmp = self.staging.inprogress(self.rel, "scores-merged")
        with pq.ParquetWriter(tmp, self.schema, filesystem=self.staging.work_fs) as writer:
            for part in range(self.parts):
                pf = pq.ParquetFile(self.staging.fs.open_input_file(self._part(part)))
                for rg in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(rg))
        self.staging.publish(tmp, name)
        return name

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        for tmp in (self._tmp, self._single):
            if tmp is not None:
                try:
                    self.staging.work_fs.delete_file(tmp)
                except OSError:
                    pass
        self._writer = self._tmp = self._single = None
        self._pending, self._pending_rows = [], 0


def clean(out: Location, keep: set[str], fence=None) -> int:
    """Remove the score files no manifest entry names (``keep``: paths relative to OUT); returns how many."""
    root = out.join(REUSE_DIR)
    try:
        infos = out.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    removed = 0
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = REUSE_DIR + info.path[len(root):]
        if rel not in keep:
            if fence is not None:
                fence()
            storage.delete(out.fs, info.path)
            removed += 1
    return removed
