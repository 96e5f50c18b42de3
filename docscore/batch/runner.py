"""``score_files``: score Parquet shards into one output per shard, resumably, with three overlapping stages.

Threads: a reader thread streams record batches, cuts sort windows and tokenises them (``tokenizers`` runs in
Rust without the GIL); the calling thread runs ONNX Runtime (which releases the GIL); a writer thread assembles
output rows and writes Parquet. Bounded queues between them keep memory flat whatever the archive size.

Crash safety: a shard is read in parts of ``checkpoint_rows`` input rows. Each part is written to a temporary
name and renamed into ``OUT/_parts/<rel>/`` when whole; the finished parts are then copied into ``OUT/<rel>``
(again via a temporary name) and the shard is marked done in the manifest. A shard of a single part skips the
``_parts`` step. Window and batch boundaries depend only on the rows of a part, so a part scored after a restart
is byte-identical to the one an uninterrupted run would have written. See :mod:`docscore.batch.state`.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from docscore.batch.inputs import Shard, discover, fingerprint
from docscore.batch.options import ScoreOptions
from docscore.batch.scorer import Scorer, WindowStats
from docscore.batch.state import PARTS_DIR, SUCCESS, SUMMARY, RunState, same_content, write_json_atomic
from docscore.batch.windows import cut_windows
from docscore.bundle import Bundle, load_bundle
from docscore.errors import ConfigError, DocscoreError, InputDataError

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one ``score_files`` call did. Rates count the rows scored in this call (skipped shards excluded)."""

    rows: int = 0  # rows written
    errors: int = 0  # rows with a non-null ``error``
    files: int = 0  # shards scored in this call
    files_skipped: int = 0  # shards already done by an earlier run
    files_failed: int = 0  # shards that could not be read
    failed: list = field(default_factory=list)  # [{"path": ..., "error": ...}]
    sequences: int = 0  # model inputs (rows, or chunks in chunk mode)
    tokens: int = 0  # real tokens fed to the model
    slots: int = 0  # padded token slots fed to the model
    clipped: int = 0  # texts tokenised from a clipped prefix
    unk_rows: int = 0  # rows whose tokens are mostly the unknown token (unk_fraction > 0.5)
    wall_s: float = 0.0
    variant: str = ""
    bundle_sha256: str = ""
    output_dir: str = ""

    @property
    def ok(self) -> bool:
        return self.files_failed == 0

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

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(pad_fraction=round(self.pad_fraction, 6), docs_per_s=round(self.docs_per_s, 3),
                 tokens_per_s=round(self.tokens_per_s, 1), ok=self.ok)
        d["wall_s"] = round(self.wall_s, 3)
        return d


class Progress:
    """Progress callbacks for a front end (the CLI's tqdm bars); library code never prints."""

    def start(self, files: int, rows: int | None) -> None: ...

    def rows(self, n: int) -> None: ...

    def file_done(self, rel: str, status: str) -> None: ...


def score_files(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
                options: ScoreOptions | None = None, progress: Progress | None = None) -> RunSummary:
    """Score every input shard into ``output_dir``: one Parquet output per shard, same relative path, same rows.

    Args:
        inputs: files, directories (every ``*.parquet`` below) or globs.
        bundle: the bundle directory (hash-checked; a tampered bundle is refused) or a loaded bundle.
        output_dir: where outputs, the run manifest, the summary and ``_SUCCESS`` go.
        options: see :class:`ScoreOptions`.
        progress: optional callbacks for rows and files done.

    Returns:
        The run summary (also written to ``_docscore_summary.json``). Unreadable shards are listed in
        ``failed`` and the other shards are still scored, unless ``options.fail_fast``, which raises
        :class:`InputDataError` at the first one.

    Raises:
        BundleError: the bundle fails its hash check. DeviceError: CUDA asked for but not used.
        ConfigError: the output directory holds another bundle's or other options' outputs, or a finished
        input changed since it was scored (unless ``options.overwrite``).
    """
    options = options or ScoreOptions()

    def execute(scorer, state, summary, todo):
        _Pipeline(scorer, state, options, progress or Progress(), summary).run(todo)

    return run_shards(inputs, bundle, output_dir, options, progress, execute)


def run_shards(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
               options: ScoreOptions, progress: Progress | None, execute, load_scorer: bool = True) -> RunSummary:
    """The commit protocol every engine shares: open (or resume) the run manifest, plan which shards to score,
    let ``execute(scorer, state, summary, todo)`` score them, then write the summary and, when every shard is done,
    ``_SUCCESS``. Local mode and the Ray engine differ only in ``execute``.

    Args:
        load_scorer: load the ONNX session here (False where only remote workers can, e.g. a CUDA cluster).
    """
    t0 = time.perf_counter()
    progress = progress or Progress()
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    scorer = Scorer(bundle, options)
    if load_scorer:
        scorer.load()
    out = Path(output_dir)
    shards = discover(inputs, exclude=out)
    bundle_info = {"path": str(bundle.path), "sha256": bundle.sha256, "variant": scorer.variant}
    state = RunState.open(out, bundle_info, options.fingerprint(scorer.variant), options.overwrite)
    (out / SUCCESS).unlink(missing_ok=True)
    summary = RunSummary(variant=scorer.variant, bundle_sha256=bundle_info["sha256"], output_dir=str(out))

    todo, total_rows = _plan(shards, state, options, summary)
    progress.start(len(shards), total_rows)
    for shard in shards:
        if shard not in todo:
            progress.file_done(shard.rel, "skipped" if state.shards.get(shard.rel, {}).get("status") == "done"
                               else "failed")
    try:
        if todo:
            execute(scorer, state, summary, todo)
    finally:
        state.compact()
        summary.wall_s = time.perf_counter() - t0
        write_json_atomic(out / SUMMARY, summary.to_dict())
    if all(state.shards.get(s.rel, {}).get("status") == "done" for s in shards):
        (out / SUCCESS).write_text("")
        parts = out / PARTS_DIR
        if parts.is_dir() and not any(p.is_file() for p in parts.rglob("*")):
            shutil.rmtree(parts, ignore_errors=True)
    return summary


def _plan(shards: list[Shard], state: RunState, options: ScoreOptions, summary: RunSummary):
    """Fingerprint every shard: skip finished ones, refuse changed finished ones (unless overwrite)."""
    todo: dict[Shard, dict] = {}
    changed = []
    total_rows = 0
    for shard in shards:
        entry = state.shards.get(shard.rel)
        try:
            fp = fingerprint(shard.path)
        except OSError as e:
            _fail(state, summary, shard, None, InputDataError(f"cannot read: {e}", path=shard.path), options)
            continue
        if entry and entry.get("status") == "done":
            if not same_content(entry.get("fingerprint"), fp):
                changed.append(shard)
                continue
            if (state.out / shard.rel).is_file():
                summary.files_skipped += 1
                continue
        if entry and entry.get("status") != "done" and not same_content(entry.get("fingerprint"), fp):
            log.info("%s changed since its unfinished run; starting it over", shard.path)
            state.discard(shard.rel)
        todo[shard] = fp
        try:
            total_rows += pq.read_metadata(shard.path).num_rows
        except Exception:  # noqa: BLE001 - an unreadable footer is reported when the shard is read
            pass
    if changed:
        if not options.overwrite:
            names = ", ".join(str(s.path) for s in changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise ConfigError(f"{len(changed)} input file(s) changed since they were scored into "
                              f"{state.out}: {names}. Rerun with --overwrite to score them again")
        for shard in changed:
            log.warning("%s changed since it was scored; scoring it again (--overwrite)", shard.path)
            state.discard(shard.rel)
            todo[shard] = fingerprint(shard.path)
    return {s: todo[s] for s in shards if s in todo}, total_rows


def _fail(state, summary, shard, fp, error: Exception, options) -> None:
    log.error("%s", error)
    summary.files_failed += 1
    summary.failed.append({"path": str(shard.path), "error": str(error)})
    state.record(shard.rel, {"input": str(shard.path.resolve()), "fingerprint": fp, "status": "failed",
                             "error": str(error)})
    if options.fail_fast:
        raise error if isinstance(error, DocscoreError) else InputDataError(str(error), path=shard.path)


# --- fault injection for the resume tests: DOCSCORE_FAILPOINT="<name>:<n>" kills the process (SIGKILL) on the
# n-th time it reaches <name>. Names: part_committed, output_committed, shard_done.
_FAILPOINT_HITS: dict[str, int] = {}


def _failpoint(name: str) -> None:
    spec = os.environ.get("DOCSCORE_FAILPOINT")
    if not spec or not spec.startswith(name + ":"):
        return
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] == int(spec.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


class _Stop(Exception):
    """Another stage failed; unwind quietly."""


_DONE = object()


class _Pipeline:
    """Reader (tokenise) → caller thread (infer) → writer; the first exception anywhere stops all three."""

    def __init__(self, scorer: Scorer, state: RunState, options: ScoreOptions, progress: Progress,
                 summary: RunSummary):
        self.scorer, self.state, self.options, self.progress, self.summary = scorer, state, options, progress, summary
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.to_infer: queue.Queue = queue.Queue(maxsize=options.queue_depth)
        self.to_write: queue.Queue = queue.Queue(maxsize=options.queue_depth)
        self.lock = threading.Lock()

    def run(self, todo: dict[Shard, dict]) -> None:
        if not todo:
            return
        reader = threading.Thread(target=self._guard, args=(self._read, todo), name="docscore-read", daemon=True)
        writer = threading.Thread(target=self._guard, args=(self._write,), name="docscore-write", daemon=True)
        reader.start()
        writer.start()
        try:
            self._guard(self._infer)
        finally:
            if self.failure is not None:
                self.stop.set()
            reader.join()
            writer.join()
        if self.failure is not None:
            raise self.failure

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except _Stop:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            with self.lock:
                if self.failure is None:
                    self.failure = e
            self.stop.set()

    def _put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stop

    # --- stage 1: read, cut windows, tokenise ---------------------------------------------------------------

    def _read(self, todo: dict[Shard, dict]) -> None:
        for shard, fp in todo.items():
            try:
                self._read_shard(shard, fp)
            except (OSError, pa.ArrowException, InputDataError) as e:
                error = e if isinstance(e, InputDataError) else InputDataError(
                    f"cannot read: {type(e).__name__}: {e}", path=shard.path)
                if self.options.fail_fast:
                    raise error from e
                self._put(self.to_infer, ("error", shard, (fp, error)))
        self._put(self.to_infer, _DONE)

    def _read_shard(self, shard: Shard, fp: dict) -> None:
        scorer, opts = self.scorer, self.options
        pf = pq.ParquetFile(shard.path)
        scorer.check_columns(pf.schema_arrow, path=shard.path)
        columns = scorer.input_columns()
        schema = scorer.output_schema(pa.schema([pf.schema_arrow.field(c) for c in columns]))
        n = pf.metadata.num_rows
        n_parts = max(1, -(-n // opts.checkpoint_rows))
        done = _committed_parts(self.state.parts_dir(shard.rel), n_parts) if n_parts > 1 else 0
        self._put(self.to_infer, ("start", shard, {"fp": fp, "rows": n, "parts": n_parts, "done": done,
                                                   "schema": schema}))
        stream = _RowStream(pf, done * opts.checkpoint_rows, columns, opts.read_batch_rows, shard.path)
        for part in range(done, n_parts):
            count = min(opts.checkpoint_rows, n - part * opts.checkpoint_rows)
            for window in cut_windows(stream.take(count), scorer.window_lengths, opts.sort_window,
                                      opts.window_max_chars):
                self._put(self.to_infer, ("window", shard, scorer.prepare(window)))
            self._put(self.to_infer, ("part", shard, part))
        self._put(self.to_infer, ("end", shard, None))

    # --- stage 2: inference -----------------------------------------------------------------------------------

    def _infer(self) -> None:
        while True:
            item = self._get(self.to_infer)
            if item is not _DONE and item[0] == "window":
                prepared = item[2]
                item = ("window", item[1], (prepared, self.scorer.infer(prepared)))
            self._put(self.to_write, item)
            if item is _DONE:
                return

    # --- stage 3: assemble and write --------------------------------------------------------------------------

    def _write(self) -> None:
        current = None  # the shard being written: dict of its state
        try:
            while True:
                item = self._get(self.to_write)
                if item is _DONE:
                    return
                kind, shard, payload = item
                if kind == "start":
                    current = {"shard": shard, **payload, "writer": None, "tmp": None}
                    self.state.record(shard.rel, {"input": str(shard.path.resolve()), "fingerprint": payload["fp"],
                                                  "status": "pending", "rows": payload["rows"],
                                                  "parts": payload["parts"]})
                elif kind == "window":
                    prepared, logits = payload
                    table = self.scorer.assemble(prepared, logits)
                    if current["writer"] is None:
                        self._open_part(current)
                    current["writer"].write_table(table)
                    self.summary.add(prepared.stats)
                    self.progress.rows(table.num_rows)
                elif kind == "part":
                    self._commit_part(current, payload)
                elif kind == "end":
                    self._commit_shard(current)
                    current = None
                elif kind == "error":
                    fp, error = payload
                    if current is not None and current["shard"] == shard:
                        self._abort_part(current)
                        current = None
                    _fail(self.state, self.summary, shard, fp, error, self.options)
                    self.progress.file_done(shard.rel, "failed")
        finally:
            if current is not None:
                self._abort_part(current)

    def _part_target(self, current: dict, part: int) -> Path:
        rel = current["shard"].rel
        if current["parts"] == 1:
            return self.state.out / rel
        return self.state.parts_dir(rel) / f"part-{part:05d}.parquet"

    def _open_part(self, current: dict) -> None:
        part = current.get("part", current["done"])
        target = self._part_target(current, part)
        target.parent.mkdir(parents=True, exist_ok=True)
        current["tmp"] = target.with_name(target.name + ".tmp")
        current["writer"] = pq.ParquetWriter(current["tmp"], current["schema"])

    def _commit_part(self, current: dict, part: int) -> None:
        if current["writer"] is None:  # an empty input: an empty output with the right schema
            current["part"] = part
            self._open_part(current)
        current["writer"].close()
        os.replace(current["tmp"], self._part_target(current, part))
        current["writer"] = current["tmp"] = None
        current["part"] = part + 1
        _failpoint("part_committed")

    def _commit_shard(self, current: dict) -> None:
        shard = current["shard"]
        final = self.state.out / shard.rel
        if current["parts"] > 1:
            _merge_parts(self.state.parts_dir(shard.rel), current["parts"], final, current["schema"])
        _failpoint("output_committed")
        self.state.record(shard.rel, {"input": str(shard.path.resolve()), "fingerprint": current["fp"],
                                      "status": "done", "rows": current["rows"], "parts": current["parts"]})
        shutil.rmtree(self.state.parts_dir(shard.rel), ignore_errors=True)
        self.summary.files += 1
        self.progress.file_done(shard.rel, "done")
        _failpoint("shard_done")

    def _abort_part(self, current: dict) -> None:
        if current.get("writer") is not None:
            try:
                current["writer"].close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        if current.get("tmp") is not None:
            Path(current["tmp"]).unlink(missing_ok=True)
        current["writer"] = current["tmp"] = None


def _committed_parts(parts_dir: Path, n_parts: int) -> int:
    """How many leading parts are already committed (a part exists only once it was renamed into place)."""
    done = 0
    while done < n_parts and (parts_dir / f"part-{done:05d}.parquet").is_file():
        done += 1
    return done


def _merge_parts(parts_dir: Path, n_parts: int, final: Path, schema: pa.Schema) -> None:
    """Copy committed parts, row group by row group, into the shard's output (via a temporary name)."""
    tmp = final.with_name(final.name + ".tmp")
    final.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in range(n_parts):
            pf = pq.ParquetFile(parts_dir / f"part-{part:05d}.parquet")
            for rg in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(rg))
    os.replace(tmp, final)


class _RowStream:
    """Record batches of one file from row ``start`` on, handed out in exact row counts (``take``)."""

    def __init__(self, pf: pq.ParquetFile, start: int, columns: list[str], batch_rows: int, path):
        md = pf.metadata
        first, before = 0, 0
        while first < md.num_row_groups and before + md.row_group(first).num_rows <= start:
            before += md.row_group(first).num_rows
            first += 1
        groups = list(range(first, md.num_row_groups))
        self._it = pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns) if groups else iter(())
        self._skip = start - before
        self._pending = None
        self._path = path

    def _next(self) -> pa.RecordBatch:
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        while True:
            try:
                batch = next(self._it)
            except StopIteration:
                raise InputDataError("the file holds fewer rows than its footer says", path=self._path) from None
            if self._skip:
                if batch.num_rows <= self._skip:
                    self._skip -= batch.num_rows
                    continue
                batch, self._skip = batch.slice(self._skip), 0
            if batch.num_rows:
                return batch

    def take(self, n: int):
        while n > 0:
            batch = self._next()
            if batch.num_rows > n:
                batch, self._pending = batch.slice(0, n), batch.slice(n)
            n -= batch.num_rows
            yield batch
