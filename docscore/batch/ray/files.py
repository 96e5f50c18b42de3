"""What ``docscore score --engine ray`` runs: Ray reads and scores, docscore commits. The driver plans the shards
and cuts them into pieces, a pool of scoring actors reads and scores each piece, and the driver hands the results
back in input order (:class:`OrderedCalls`, bounded by ``RayOptions.max_blocks_ahead``) to the same
:class:`~docscore.batch.commit.committer.OutputCommitter` as the local engine."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from docscore import storage
from docscore.batch.commit.committer import READ_ERRORS, OutputCommitter, ShardPlan, plan_shard
from docscore.batch.inputs import InputFile, Shard
from docscore.batch.options import ScoreOptions
from docscore.batch.ray.actors import kill_actor, replace_memo, start_actors
from docscore.batch.ray.cluster import (BATCH_ROWS, RayOptions, RayStallError, WorkerPlan, import_ray,
                                        plan_workers, probe_address, ray_connection, resolve_address, resources)
from docscore.batch.ray.pieces import Piece, PieceResult, plan_pieces
from docscore.batch.runner import run_shards
from docscore.batch.scorer import Scorer
from docscore.batch.summary import Progress, RunSummary
from docscore.bundle import Bundle
from docscore.errors import DocscoreError, InputDataError
from docscore.files import sha256_file
from docscore.storage import resolve

log = logging.getLogger(__name__)


def score_files_ray(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
                    options: ScoreOptions | None = None, ray_options: RayOptions | None = None,
                    progress: Progress | None = None, **ray_fields) -> RunSummary:
    """:func:`~docscore.batch.runner.score_files` with Ray doing the reading and scoring: same outputs, manifest
    and resume.

    Args:
        inputs: files, directories (every ``*.parquet`` below) or globs, local paths or URIs (``s3://...``). The
            actors read them themselves: on a cluster, use object storage (or a file system every node mounts at
            the same path).
        bundle: the bundle directory or URI; every actor loads it from there (a URI into its node's cache).
        output_dir: where outputs, the run manifest, the summary and ``_SUCCESS`` go, a path or a URI (written
            by this process through :class:`~docscore.batch.commit.committer.OutputCommitter`).
        options: see :class:`ScoreOptions`.
        ray_options: see :class:`RayOptions`; keyword arguments (``address=``, ``workers=``, ``num_cpus=``,
            ``tmp_dir=``, ...) override its fields.
        progress: optional callbacks for rows and files done.

    Raises:
        ConfigError: Ray is not installed (the message says how to install it), or as ``score_files``.
        DeviceError: the cluster address does not answer, or CUDA is asked for and the cluster has no GPU.
    """
    import_ray()  # the install hint comes before any work
    options = options or ScoreOptions()
    ray_options = replace(ray_options or RayOptions(), **ray_fields)
    if not ray_options.local:  # a dead address fails before the output directory is touched
        probe_address(resolve_address(ray_options.address), ray_options.connect_timeout_s)

    def execute(scorer, committer, todo):
        quiet = {"ray.data": logging.WARNING,  # Ray Data logs every execution at INFO: shown only with -v
                 "ray.data._internal.progress": logging.ERROR}  # "progress bars disabled": the CLI draws its own
        saved = {name: logging.getLogger(name).level for name in quiet}
        if not log.isEnabledFor(logging.INFO):
            for name, level in quiet.items():
                logging.getLogger(name).setLevel(level)
        try:
            with ray_connection(ray_options):
                # Workers run the variant the driver chose: a default chosen by measurement on each node could
                # differ between nodes, and with it the scores.
                pinned = options.replace(variant=scorer.variant)
                RayFeed(scorer, committer, pinned, ray_options).run(todo)
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)

    # On CPU the options are checked here, once, not in every actor; a CUDA driver may have no GPU: actors check.
    return run_shards(inputs, bundle, output_dir, options, progress, execute,
                      load_scorer=options.device == "cpu")



class RayFeed:
    """The driver: plans the shards, sends their pieces to a pool of :class:`ScoringActor` (which read and score
    them), and feeds the scored tables to the committer in input order."""

    def __init__(self, scorer: Scorer, committer: OutputCommitter, options: ScoreOptions, ray_options: RayOptions):
        self.scorer, self.committer, self.options, self.ray_options = scorer, committer, options, ray_options

    def run(self, todo: dict[Shard, dict]) -> None:
        import ray

        piece_rows = self.ray_options.batch_rows or min(BATCH_ROWS, self.options.sort_window)
        planned = []  # (plan, sha256, pieces), in input order
        for i, (shard, fp) in enumerate(todo.items()):
            try:
                planned.append(self._plan(i, shard, fp, piece_rows))
            except READ_ERRORS as e:
                self.committer.fail_shard(shard, fp, e)
        if not planned:
            return
        opts, ropts = self.options, self.ray_options
        res = ray.cluster_resources()
        workers = plan_workers(res.get("CPU", 0), res.get("GPU", 0), opts.device, ropts.workers, opts.threads)
        bundle = self.scorer.bundle
        source = bundle.uri or str(Path(bundle.path).resolve())
        window = ropts.max_blocks_ahead or 4 * workers.workers * workers.calls_per_actor
        failed: set[int] = set()  # shards whose remaining pieces are not sent
        endpoint = endpoint_of(resolve(source, opts.s3_endpoint).fs, opts.s3_endpoint) if bundle.uri else None
        reuse = self.committer.reuse
        if reuse is not None and workers.calls_per_actor > 1:  # concurrent calls in one actor: no shared run memo
            reuse = replace_memo(reuse, 0)
        actors = start_actors(ray, workers, source, opts, endpoint, ray.put(reuse) if reuse is not None else None)
        calls = None
        try:
            calls = OrderedCalls(actors, window, ropts.stall_timeout_s, workers)
            log.info("scoring %d piece(s) on %d Ray actor(s): %.2f CPU, %g GPU, %d ORT thread(s) each; at most %d "
                     "piece(s) ahead of the oldest", sum(len(p[2]) for p in planned), workers.workers,
                     workers.actor_cpus, workers.actor_gpus, workers.threads, window)
            results = calls.run(p for _, _, pieces in planned for p in pieces if p.shard not in failed)
            for plan, sha256, pieces in planned:
                self._commit(plan, sha256, pieces, results, failed)
        finally:
            if calls is not None and self.committer.summary is not None:  # in the summary however the run ends
                self.committer.summary.engine_stats = {
                    "engine": "ray", "workers": workers.workers, "pieces": calls.sent, "max_blocks_ahead": window,
                    "peak_outstanding": calls.peak_outstanding, "peak_ahead": calls.peak_ahead}
            for actor in actors:  # however the run ends: actors hold CPUs (and GPUs) until killed
                kill_actor(ray, actor)

    def _plan(self, index: int, shard: Shard, fp: dict, piece_rows: int) -> tuple[ShardPlan, str, list[Piece]]:
        fs = shard.fs or pafs.LocalFileSystem()
        with fs.open_input_file(str(shard.path)) as f:
            src = InputFile(f, shard.partitions, self.scorer.input_columns(), path=shard.name)
            plan = plan_shard(shard, fp, src, self.scorer, self.options, self.committer.state)
            groups = [src.metadata.row_group(g).num_rows for g in range(src.metadata.num_row_groups)]
        sha256 = sha256_file(shard.path, shard.fs)  # the actors read the rows elsewhere: one sequential read here
        uri = shard.uri or str(Path(shard.path).resolve())
        endpoint = endpoint_of(shard.fs, self.options.s3_endpoint) if shard.uri else None
        return plan, sha256, plan_pieces(index, plan, groups, piece_rows, uri, endpoint)

    def _commit(self, plan: ShardPlan, sha256: str, pieces: list[Piece], results, failed: set[int]) -> None:
        committer = self.committer
        committer.begin_shard(plan)
        part_ends = {p * plan.checkpoint_rows + plan.part_rows(p): p for p in range(plan.done, plan.parts)}
        if not pieces:  # an empty input (one empty part), or every part committed before a kill
            for part in range(plan.done, plan.parts):
                committer.commit_part(part)
        for piece in pieces:
            got, result = next(results)
            while got.shard in failed:  # sent before its shard failed
                got, result = next(results)
            if got != piece:
                raise RuntimeError(f"Ray returned {got} where {piece} was expected")
            if result.error is not None:
                failed.add(piece.shard)
                committer.fail_shard(plan.shard, plan.fingerprint, InputDataError(result.error,
                                                                                  path=plan.shard.name))
                return
            committer.write(result.table.cast(plan.schema), result.stats, result.keys)
            if piece.stop in part_ends:
                committer.commit_part(part_ends[piece.stop])
        committer.finish_shard(sha256)


def endpoint_of(fs, default: str | None) -> str | None:
    """The S3-compatible endpoint of a file system (never its credentials), for the actors to open the same
    store."""
    options = storage.s3_options(fs) if fs is not None else None
    if options is None:
        return default
    endpoint = options.get("endpoint_override")
    if not endpoint:
        return default or os.environ.get("AWS_ENDPOINT_URL")
    return endpoint if "://" in endpoint else f"{options.get('scheme') or 'https'}://{endpoint}"



class OrderedCalls:
    """Actor calls, handed back in the order they were sent, with a bound on how far ahead Ray may run.

    Calls finish in any order (``preserve_order`` in Ray Data serialised the actors: 4 one-second calls on 2 actors
    took 7.1 s with it, 3.5 s without). At most ``window`` calls are outstanding: sent and not yet handed back,
    whether running, queued on an actor, or finished behind an older one. When a slow call holds up the oldest
    slot, no new piece is sent once the window is full (backpressure): the results that finished ahead of it, kept
    in Ray's object store and fetched only when their turn comes, never exceed ``window - 1``.

    Args:
        actors: the scoring actors; a piece goes to an actor with fewer unfinished calls than it runs at once
            (``WorkerPlan.calls_per_actor``), never into a queue behind a call that may be the slow one.
        window: the most outstanding calls.
        stall_timeout_s: fail with :class:`RayStallError` when no call finishes for this long.
    """

    def __init__(self, actors: list, window: int, stall_timeout_s: float, plan: WorkerPlan):
        self.actors, self.window, self.stall_timeout_s, self.plan = actors, max(1, window), stall_timeout_s, plan
        self.peak_outstanding = 0  # the most calls outstanding at once (at most ``window``)
        self.peak_ahead = 0  # the most finished results waiting behind an unfinished older call
        self.sent = 0  # calls sent

    def run(self, pieces) -> Iterator[tuple[Piece, PieceResult]]:
        import ray

        pending: deque = deque()  # (piece, ref, actor index), oldest first
        finished: set = set()  # refs known to be done
        pieces = iter(pieces)
        more, last = True, time.monotonic()
        while True:
            while more and len(pending) < self.window:
                busy = [0] * len(self.actors)  # unfinished calls per actor
                for _, ref, a in pending:
                    busy[a] += ref not in finished
                a = busy.index(min(busy))
                if busy[a] >= self.plan.calls_per_actor:
                    break  # never queue behind a call that may be the slow one: wait for a free actor
                piece = next(pieces, None)
                if piece is None:
                    more = False
                    break
                pending.append((piece, self.actors[a].score_piece.remote(piece), a))
                self.sent += 1
            self.peak_outstanding = max(self.peak_outstanding, len(pending))
            if not pending:
                return
            piece, head, _ = pending[0]
            if head in finished:
                pending.popleft()
                finished.discard(head)
                yield piece, self._get(ray, head)
                continue
            waiting = [ref for _, ref, _ in pending if ref not in finished]
            done, _ = ray.wait(waiting, num_returns=1, timeout=min(1.0, self.stall_timeout_s))
            if done:
                done, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
                finished.update(done)
                last = time.monotonic()
                self.peak_ahead = max(self.peak_ahead, len(finished) - (head in finished))
            elif time.monotonic() - last > self.stall_timeout_s:
                raise self._stall(ray, piece, len(waiting))

    @staticmethod
    def _get(ray, ref) -> PieceResult:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, DocscoreError):
                raise cause from e
            raise

    def _stall(self, ray, oldest: Piece, waiting: int) -> RayStallError:
        plan = self.plan
        return RayStallError(
            f"the Ray pipeline made no progress for {self.stall_timeout_s:g} s: no scoring call finished. Waiting: "
            f"{waiting} call(s) on {len(self.actors)} actor(s), the oldest for {oldest.uri} rows "
            f"{oldest.start}..{oldest.stop}. The actors ask for {plan.actor_cpus:g} CPU"
            f"{f', {plan.actor_gpus:g} GPU' if plan.actor_gpus else ''} each; {resources(ray)}. If other jobs "
            "hold the rest, free them or add nodes; if one actor call or model load can take longer, raise "
            "RayOptions.stall_timeout_s")
