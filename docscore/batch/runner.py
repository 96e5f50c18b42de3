"""``score_files``: score Parquet shards into one output per shard, resumably, with three overlapping stages.

Threads: a reader thread streams record batches, cuts sort windows and tokenises them (``tokenizers`` runs in
Rust without the GIL); the calling thread runs ONNX Runtime (which releases the GIL); a writer thread assembles
output rows and writes Parquet. Bounded queues between them keep memory flat whatever the archive size.

Crash safety: a shard is read in parts of ``checkpoint_rows`` input rows. Each part is written to an in-progress
name under ``OUT/_docscore/staging/`` and renamed to a committed part when whole; the finished parts are then
copied into one staged file that is renamed to ``OUT/<rel>``, and the shard is marked done in the manifest. A shard
of a single part is renamed into place directly. Window and batch boundaries depend only on the rows of a part, so
a part scored after a restart is byte-identical to the one an uninterrupted run would have written. One run at a
time holds the output's lock, and each run first removes what killed runs left (:mod:`docscore.batch.commit`).
See :mod:`docscore.batch.state` for the manifest.

A night on a living archive (:func:`run_shards`): new inputs are scored, finished ones skipped, changed ones
handled by ``options.on_change``, deleted ones by ``options.prune``; health (failed files, row error rate) decides
``summary.ok`` and ``_SUCCESS``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from docscore import storage
from docscore.batch.commit import DigestingFile, WriterLock
from docscore.batch.inputs import InputFile, Shard, discover
from docscore.batch.options import ScoreOptions
from docscore.batch.policy import account, handle_deleted, plan_shards, record_failure
from docscore.batch.scorer import Scorer, WindowStats
from docscore.batch.state import SUCCESS, SUMMARY, RunState, write_json_atomic
from docscore.batch.windows import cut_windows
from docscore.bundle import Bundle, load_bundle_uri
from docscore.errors import InputDataError, OutputError
from docscore.storage import Location, resolve

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
    wall_s: float = 0.0
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
                 tokens_per_s=round(self.tokens_per_s, 1), ok=self.ok, error_rate=round(self.error_rate, 6),
                 problems=self.problems, files_changed=len(self.changed), files_deleted=len(self.deleted))
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
        ConfigError: the output directory holds another bundle's or other options' outputs (unless
        ``options.overwrite``). LockHeldError: another run is writing ``output_dir``. OutputError: the output
        cannot be written (read-only, permissions, full disk); a rerun resumes.
    """
    options = options or ScoreOptions()

    def execute(scorer, state, summary, todo):
        _Pipeline(scorer, state, options, progress or Progress(), summary).run(todo)

    return run_shards(inputs, bundle, output_dir, options, progress, execute)


def run_shards(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
               options: ScoreOptions, progress: Progress | None, execute, load_scorer: bool = True) -> RunSummary:
    """The commit protocol every engine shares: take the output's writer lock, clean what killed runs left, open
    (or resume) the run manifest, plan which shards to score (new, unfinished, changed per ``on_change``) and
    which deleted inputs to prune, let ``execute(scorer, state, summary, todo)`` score them, then write the
    summary and, when every shard is done and the run is healthy, ``_SUCCESS``. Local mode and the Ray engine
    differ only in ``execute``.

    Args:
        load_scorer: load the ONNX session here (False where only remote workers can, e.g. a CUDA cluster).

    Raises:
        LockHeldError: another run holds the output. OutputError: the output cannot be written (read-only,
        permissions, full disk); a rerun resumes.
    """
    t0 = time.perf_counter()
    progress = progress or Progress()
    out = resolve(output_dir, options.s3_endpoint)
    shards = discover(inputs, exclude=out, endpoint=options.s3_endpoint)
    try:
        bucket = storage.missing_bucket(out)
        if bucket:
            raise OutputError(f"cannot write {out.uri}: the bucket {bucket} does not exist (docscore never creates "
                              "buckets); create it or pick another --output", path=out.uri)
        out.fs.create_dir(out.path, recursive=True)
        lock = WriterLock(out.path, out.fs, name=out.uri).acquire()
    except OSError as e:
        raise OutputError.from_os(e, "create", path=out.uri) from e
    try:
        return _run_locked(shards, bundle, out, options, progress, execute, load_scorer, t0)
    except OSError as e:
        raise OutputError.from_os(e, path=None if out.is_local else out.uri) from e
    finally:
        lock.release()


def _run_locked(shards, bundle, out: Location, options: ScoreOptions, progress: Progress, execute, load_scorer,
                t0) -> RunSummary:
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle_uri(bundle, options.s3_endpoint)
    scorer = Scorer(bundle, options)
    if load_scorer:
        scorer.load()
    bundle_info = {"path": str(getattr(bundle, "uri", None) or bundle.path), "sha256": bundle.sha256, "variant": scorer.variant}
    state = RunState.open(out, bundle_info, options.fingerprint(scorer.variant), options.overwrite)
    storage.delete(out.fs, out.join(SUCCESS))
    summary = RunSummary(variant=scorer.variant, bundle_sha256=bundle_info["sha256"], output_dir=out.uri,
                         max_error_rate=options.max_error_rate)
    summary.cleaned = len(state.staging.clean(
        keep={rel for rel, e in state.shards.items() if e.get("status") == "pending"}))

    todo, total_rows = plan_shards(shards, state, options, summary)
    handle_deleted(shards, state, options, summary)
    progress.start(len(shards), total_rows)
    for shard in shards:
        if shard not in todo:
            progress.file_done(shard.rel, "skipped" if state.shards.get(shard.rel, {}).get("status") == "done"
                               else "failed")
    failed = False
    try:
        if todo:
            execute(scorer, state, summary, todo)
    except BaseException:
        failed = True
        raise
    finally:
        try:
            state.compact()
            account(shards, state, summary)
            summary.wall_s = time.perf_counter() - t0
            write_json_atomic(out.join(SUMMARY), summary.to_dict(), out.fs)
        except OSError as e:  # e.g. the disk that failed the run is still full: keep the first error
            if not failed:
                raise
            log.info("could not record the run's state in %s either: %s", out, e)
    if all(state.shards.get(s.rel, {}).get("status") == "done" for s in shards):
        state.staging.remove_all()
        if summary.ok:
            storage.write_bytes(out.fs, out.join(SUCCESS), b"")
    for problem in summary.problems:
        log.warning("%s: %s", out, problem)
    return summary


# --- fault injection for the resume and lock tests: DOCSCORE_FAILPOINT="<name>:<n>" kills the process (SIGKILL)
# on the n-th time it reaches <name>; "<name>:<n>:wait=<path>" instead waits there until <path> exists (at most
# 120 s). Names: part_committed, output_committed, shard_done.
_FAILPOINT_HITS: dict[str, int] = {}


def _failpoint(name: str) -> None:
    spec = os.environ.get("DOCSCORE_FAILPOINT")
    if not spec or not spec.startswith(name + ":"):
        return
    _, count, *action = spec.split(":", 2)
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] != int(count):
        return
    if action and action[0].startswith("wait="):
        deadline = time.monotonic() + 120
        while not os.path.exists(action[0][5:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
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
                    f"cannot read: {type(e).__name__}: {e}", path=shard.name)
                if self.options.fail_fast:
                    raise error from e
                self._put(self.to_infer, ("error", shard, (fp, error)))
        self._put(self.to_infer, _DONE)

    def _read_shard(self, shard: Shard, fp: dict) -> None:
        scorer, opts = self.scorer, self.options
        columns = scorer.input_columns()
        with DigestingFile(shard.path, shard.fs) as source:  # the content digest, computed as the file is read
            src = InputFile(source, shard.partitions, columns, path=shard.name)
            source.start()
            scorer.check_columns(src.schema, path=shard.name)
            input_schema = pa.schema([src.schema.field(c) for c in columns])
            schema = scorer.output_schema(input_schema)
            n = src.num_rows
            n_parts = max(1, -(-n // opts.checkpoint_rows))
            done = self.state.staging.committed_parts(shard.rel, n_parts) if n_parts > 1 else 0
            self._put(self.to_infer, ("start", shard, {"fp": fp, "rows": n, "parts": n_parts, "done": done,
                                                       "schema": schema, "columns": _types(input_schema)}))
            stream = _RowStream(src, done * opts.checkpoint_rows, columns, opts.read_batch_rows, shard.name)
            for part in range(done, n_parts):
                count = min(opts.checkpoint_rows, n - part * opts.checkpoint_rows)
                for window in cut_windows(stream.take(count), scorer.window_lengths, opts.sort_window,
                                          opts.window_max_chars):
                    self._put(self.to_infer, ("window", shard, scorer.prepare(window)))
                self._put(self.to_infer, ("part", shard, part))
            self._put(self.to_infer, ("end", shard, {"sha256": source.hexdigest()}))

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
                    self.state.record(shard.rel, {"input": shard.source, "fingerprint": payload["fp"],
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
                    if payload and payload.get("sha256"):
                        current["fp"] = {**current["fp"], "sha256": payload["sha256"]}
                    self._commit_shard(current)
                    current = None
                elif kind == "error":
                    fp, error = payload
                    if current is not None and current["shard"] == shard:
                        self._abort_part(current)
                        current = None
                    record_failure(self.state, self.summary, shard, fp, error, self.options)
                    self.progress.file_done(shard.rel, "failed")
        except OSError as e:  # e.g. a full disk: name the file being written
            if not e.filename and current is not None and current.get("tmp"):
                e.filename = current["tmp"]
            raise
        finally:
            if current is not None:
                self._abort_part(current)

    def _open_part(self, current: dict) -> None:
        part = current.get("part", current["done"])
        staging = self.state.staging
        current["tmp"] = staging.inprogress(current["shard"].rel, f"part-{part:05d}")
        current["writer"] = pq.ParquetWriter(current["tmp"], current["schema"], filesystem=staging.work_fs)

    def _commit_part(self, current: dict, part: int) -> None:
        if current["writer"] is None:  # an empty input: an empty output with the right schema
            current["part"] = part
            self._open_part(current)
        current["writer"].close()
        rel = current["shard"].rel
        if current["parts"] == 1:
            self.state.staging.publish(current["tmp"], rel)
        else:
            self.state.staging.commit_part(current["tmp"], rel, part)
        current["writer"] = current["tmp"] = None
        current["part"] = part + 1
        _failpoint("part_committed")

    def _commit_shard(self, current: dict) -> None:
        shard, staging = current["shard"], self.state.staging
        final = self.state.path(shard.rel)
        if current["parts"] > 1:
            _merge_parts(staging, shard.rel, current["parts"], current["schema"])
        _failpoint("output_committed")
        errors = pq.read_table(final, columns=["error"], filesystem=self.state.fs).column("error")
        self.state.record(shard.rel, {"input": shard.source, "fingerprint": current["fp"],
                                      "status": "done", "rows": current["rows"], "parts": current["parts"],
                                      "errors": len(errors) - errors.null_count,
                                      "columns": current.get("columns", {})})
        staging.discard(shard.rel)
        self.summary.files += 1
        self.summary.scored.append(shard.rel)
        self.progress.file_done(shard.rel, "done")
        _failpoint("shard_done")

    def _abort_part(self, current: dict) -> None:
        if current.get("writer") is not None:
            try:
                current["writer"].close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        if current.get("tmp") is not None:
            try:
                self.state.staging.work_fs.delete_file(current["tmp"])
            except OSError:
                pass  # removed by the next run's clean-up
        current["writer"] = current["tmp"] = None


def _types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _merge_parts(staging, rel: str, n_parts: int, schema: pa.Schema) -> None:
    """Copy committed parts, row group by row group, into the shard's output (via an in-progress name)."""
    tmp = staging.inprogress(rel, "output")
    with pq.ParquetWriter(tmp, schema, filesystem=staging.work_fs) as writer:
        for part in range(n_parts):
            pf = pq.ParquetFile(staging.fs.open_input_file(staging.part(rel, part)))
            for rg in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(rg))
    staging.publish(tmp, rel)


class _RowStream:
    """Record batches of one file from row ``start`` on, handed out in exact row counts (``take``)."""

    def __init__(self, pf: InputFile, start: int, columns: list[str], batch_rows: int, path):
        md = pf.metadata
        first, before = 0, 0
        while first < md.num_row_groups and before + md.row_group(first).num_rows <= start:
            before += md.row_group(first).num_rows
            first += 1
        groups = list(range(first, md.num_row_groups))
        self._it = pf.iter_batches(columns, batch_rows, groups) if groups else iter(())
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
