"""``score_files``: score Parquet shards into one output per shard, resumably, with three overlapping stages.

Threads: a reader thread streams record batches, cuts sort windows and tokenises them (``tokenizers`` runs in
Rust without the GIL); the calling thread runs ONNX Runtime (which releases the GIL); a writer thread assembles
output rows and writes Parquet. Bounded queues between them keep memory flat whatever the archive size.

Crash safety: the writer thread feeds :class:`~docscore.batch.commit.committer.OutputCommitter`, which owns the commit
protocol (parts of ``checkpoint_rows`` input rows, outputs published whole, the manifest journal, the writer lock;
read that module to learn how outputs are committed). Window and batch boundaries depend only on the rows of a
part, so a part scored after a restart is byte-identical to the one an uninterrupted run would have written.

A night on a living archive (:func:`run_shards`): new inputs are scored, finished ones skipped, changed ones
handled by ``options.on_change``, deleted ones by ``options.prune``; health (failed files, row error rate) decides
``summary.ok`` and ``_SUCCESS``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from docscore.batch.commit.fingerprint import DigestingFile
from docscore.batch.commit.committer import OutputCommitter, READ_ERRORS, ShardPlan, plan_shard, read_error
from docscore.batch.inputs import InputFile, RowStream, Shard, discover
from docscore.batch.options import ScoreOptions
from docscore.batch.policy import account, check_text_column, handle_deleted, plan_shards
from docscore.batch.reuse import Reuse, WindowReuse
from docscore.batch.scorer import Prepared, Scorer
from docscore.batch.summary import Progress, RunSummary
from docscore.batch.windows import cut_windows
from docscore.bundle import Bundle, load_bundle_uri
from docscore.errors import LockLostError, OutputError
from docscore.storage import resolve

log = logging.getLogger(__name__)


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

    def execute(scorer, committer, todo):
        _Pipeline(scorer, committer, options, committer.reuse).run(todo)

    return run_shards(inputs, bundle, output_dir, options, progress, execute)


def run_shards(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
               options: ScoreOptions, progress: Progress | None, execute, load_scorer: bool = True) -> RunSummary:
    """One night on an output, for every engine: take the output (:meth:`OutputCommitter.setup_job`), open the
    manifest, plan which shards to score (new, unfinished, changed per ``on_change``) and which deleted inputs to
    prune, let ``execute(scorer, committer, todo)`` score them into the committer, then record the manifest and
    summary and, when every shard is done and the run is healthy, ``_SUCCESS``. Engines differ only in
    ``execute``.

    Args:
        load_scorer: load the ONNX session here (False where only remote workers can, e.g. a CUDA cluster).

    Raises:
        LockHeldError: another run holds the output. LockLostError: another run took the lock over meanwhile
        (this run was paused past the stale limit); nothing more was published. OutputError: the output cannot be
        written (read-only, permissions, full disk); a rerun resumes.
    """
    t0 = time.perf_counter()
    progress = progress or Progress()
    out = resolve(output_dir, options.s3_endpoint)
    shards = discover(inputs, exclude=out, endpoint=options.s3_endpoint)
    # a bad bundle is refused before the output is touched (no lock, no OUT/_docscore/ left behind)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle_uri(bundle, options.s3_endpoint)
    check_text_column(shards, options.text_column)
    committer = OutputCommitter(out, options, progress)
    committer.setup_job()
    try:
        return _run_locked(shards, bundle, committer, options, progress, execute, load_scorer, t0)
    except OSError as e:
        raise (committer.lost_error() or OutputError.from_os(e, path=None if out.is_local else out.uri)) from e
    finally:
        committer.close()


def _run_locked(shards, bundle: Bundle, committer: OutputCommitter, options: ScoreOptions, progress: Progress, execute,
                load_scorer, t0) -> RunSummary:
    out = committer.out
    scorer = Scorer(bundle, options)
    if load_scorer:
        scorer.load(background=True)  # an OpenVINO model compiles while the pipeline reads and tokenises
    bundle_info = {"path": str(getattr(bundle, "uri", None) or bundle.path), "sha256": bundle.sha256,
                   "variant": scorer.variant}
    state = committer.open_manifest(bundle_info, options.fingerprint(scorer.variant), options.overwrite)
    summary = RunSummary(variant=scorer.variant, bundle_sha256=bundle_info["sha256"], output_dir=out.uri,
                         max_error_rate=options.max_error_rate, cleaned=committer.cleaned)
    committer.start(summary)
    if options.reuse:  # before plan_shards: a changed or deleted input's old scores still serve this run
        committer.open_reuse(scorer.score_schema())

    todo, total_rows = plan_shards(shards, state, options, summary)
    handle_deleted(shards, state, options, summary)
    progress.start(len(shards), total_rows)
    for shard in shards:
        if shard not in todo:
            progress.file_done(shard.rel, "skipped" if state.shards.get(shard.rel, {}).get("status") == "done"
                               else "failed")
    failure: BaseException | None = None
    try:
        if todo:
            execute(scorer, committer, todo)
    except BaseException as e:
        failure = e
        raise
    finally:
        if not isinstance(failure, LockLostError):  # a run that lost the lock records nothing more
            try:
                account(shards, state, summary)
                summary.wall_s = time.perf_counter() - t0
                committer.record_state()  # fenced: after a loss it raises LockLostError instead
            except OSError as e:  # e.g. the disk that failed the run is still full: keep the first error
                if failure is None:
                    raise
                log.info("could not record the run's state in %s either: %s", out, e)
        scorer.close()
    committer.commit_job(shards)
    for problem in summary.problems:
        log.warning("%s: %s", out, problem)
    return summary


class _Stop(Exception):
    """Another stage failed; unwind quietly."""


# What the reader thread hands on, in order, per shard: _Begin, then _Window (scored by the inference stage) and
# _PartEnd items, then _End; or _Failed at any point.


@dataclass(frozen=True)
class _Begin:
    plan: ShardPlan


@dataclass(frozen=True)
class _Window:
    prepared: Prepared  # the rows to compute (every row of the window unless some are reused)
    reuse: WindowReuse | None = None  # the window's reuse plan (options.reuse)
    logits: np.ndarray | None = None  # (S, num_labels), set by the inference stage


@dataclass(frozen=True)
class _PartEnd:
    part: int


@dataclass(frozen=True)
class _End:
    sha256: str


@dataclass(frozen=True)
class _Failed:
    shard: Shard
    fingerprint: dict | None
    error: Exception


_DONE = object()


class _Pipeline:
    """Reader (tokenise) → caller thread (infer) → writer (assemble, commit); the first exception anywhere stops
    all three."""

    def __init__(self, scorer: Scorer, committer: OutputCommitter, options: ScoreOptions, reuse: Reuse | None = None):
        self.scorer, self.committer, self.options, self.reuse = scorer, committer, options, reuse
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
            except READ_ERRORS as e:
                # the writer commits what came before it, then journals it (and, with --fail-fast, stops the run)
                self._put(self.to_infer, _Failed(shard, fp, read_error(shard, e)))
                if self.options.fail_fast:
                    break
        self._put(self.to_infer, _DONE)

    def _read_shard(self, shard: Shard, fp: dict) -> None:
        scorer, opts = self.scorer, self.options
        columns = scorer.input_columns()
        with DigestingFile(shard.path, shard.fs) as source:  # the content digest, computed as the file is read
            src = InputFile(source, shard.partitions, columns, path=shard.name)
            source.start()
            plan = plan_shard(shard, fp, src, scorer, opts, self.committer.state)
            self._put(self.to_infer, _Begin(plan))
            stream = RowStream(src, plan.start_row, columns, opts.read_batch_rows, shard.name)
            for part in range(plan.done, plan.parts):
                for window in cut_windows(stream.take(plan.part_rows(part)), scorer.window_lengths,
                                          opts.sort_window, opts.window_max_chars):
                    self._put(self.to_infer, self._prepare(window))
                self._put(self.to_infer, _PartEnd(part))
            self._put(self.to_infer, _End(source.hexdigest()))

    def _prepare(self, window) -> _Window:
        if self.reuse is None:
            return _Window(self.scorer.prepare(window))
        plan = self.reuse.plan(window, self.options.text_column, list(self.options.output_columns()))
        prepared = self.scorer.prepare(window.take(plan.infer) if plan.reused else window)
        self.reuse.accept(plan)
        return _Window(prepared, plan)

    # --- stage 2: inference -----------------------------------------------------------------------------------

    def _infer(self) -> None:
        while True:
            item = self._get(self.to_infer)
            if isinstance(item, _Window):
                item = _Window(item.prepared, item.reuse, self.scorer.infer(item.prepared))
            self._put(self.to_write, item)
            if item is _DONE:
                return

    # --- stage 3: assemble and commit -------------------------------------------------------------------------

    def _write(self) -> None:
        committer = self.committer
        while True:
            item = self._get(self.to_write)
            if item is _DONE:
                return
            if isinstance(item, _Window):
                table = self.scorer.assemble(item.prepared, item.logits)
                if item.reuse is None:
                    committer.write(table, item.prepared.stats)
                    continue
                table = self.reuse.combine(item.reuse, table)
                stats = replace(item.prepared.stats, rows=table.num_rows, reused=item.reuse.reused,
                                errors=table.num_rows - table.column("error").null_count)
                committer.write(table, stats, item.reuse.keys)
            elif isinstance(item, _Begin):
                committer.begin_shard(item.plan)
            elif isinstance(item, _PartEnd):
                committer.commit_part(item.part)
            elif isinstance(item, _End):
                committer.finish_shard(item.sha256)
            elif isinstance(item, _Failed):
                committer.fail_shard(item.shard, item.fingerprint, item.error)
