"""The scoring actor (a :class:`~docscore.batch.scorer.Scorer` in a Ray actor: one ONNX Runtime session per actor,
built once), how a run starts and stops its actors, and the registry :func:`~docscore.batch.ray.dataset.score_dataset`
callers use to kill theirs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa

from docscore.batch.options import ScoreOptions
from docscore.batch.ray.cluster import WorkerPlan
from docscore.batch.ray.pieces import Piece, PieceResult, read_piece
from docscore.batch.reuse import Reuse
from docscore.batch.scorefiles import text_keys
from docscore.batch.scorer import Scorer, WindowStats
from docscore.bundle import load_bundle_uri

log = logging.getLogger(__name__)

# Columns the driver adds to every row so it can check the order and route rows back to their shard.
SHARD_COL, ROW_COL, READ_ERROR_COL = "_docscore_shard", "_docscore_row", "_docscore_read_error"
SLOTS_COL, CLIPPED_COL = "_docscore_slots", "_docscore_clipped"  # per-call stats, on the first row of a call
META_COLUMNS = (SHARD_COL, ROW_COL, READ_ERROR_COL)


class ScoringActor:
    """A :class:`Scorer` living in a Ray actor: one ONNX Runtime session per actor, built once.

    Columns named in :data:`META_COLUMNS` pass through unchanged (after the scored columns); two stats columns carry the
    padded slots and clipped texts of the call on its first row, so the driver can report the pad fraction.

    Args:
        bundle: the bundle directory or URI (a URI is copied into the node's cache and hash-checked there).
        options: the scoring options; ``threads`` is set per actor by :func:`plan_workers`.
        failpoint: fault injection for tests: ``crash:<marker>`` kills the actor process once (Ray restarts it and
            retries the call), ``raise:<marker>`` raises once (the run fails), ``hang:<marker>`` never returns
            (the run stalls), ``slow:<seconds>:<marker>`` sleeps once (a slow piece). The marker file makes it
            once; it fires on an actor's second call.
        registry: an :class:`ActorRegistry` handle the actor registers itself with (see :func:`score_dataset`).
        endpoint: the S3-compatible endpoint of a bundle or input URI that names none.
    """

    def __init__(self, bundle: str, options: ScoreOptions, failpoint: str | None = None, registry=None,
                 endpoint: str | None = None, reuse: Reuse | None = None):
        if registry is not None:  # first, so that the driver can kill this actor even while it loads the model
            import ray

            ctx = ray.get_runtime_context()
            ray.get(registry.add.remote(ctx.get_actor_id(), ctx.current_actor))
        self.scorer = Scorer(load_bundle_uri(bundle, endpoint), options).load()
        self.failpoint = failpoint
        self.reuse = reuse  # the driver's index (shared through Ray's object store) and the score files' reader
        self.calls = 0
        self._file: dict = {}  # the input file of the last piece, kept open for the next one

    def score_piece(self, piece: "Piece") -> "PieceResult":
        """Read a piece of an input file (local path or URI) and score it; a read failure is returned, not raised,
        so the driver fails that file only."""
        self.calls += 1
        self._maybe_fail()
        scorer = self.scorer
        columns = scorer.input_columns()
        try:
            table = read_piece(piece, columns, self.scorer.options.read_batch_rows, self._file)
        except Exception as e:  # noqa: BLE001 - reported by the driver with the file's name
            self._file.clear()
            return PieceResult(None, WindowStats(), f"cannot read rows {piece.start}..{piece.stop}: "
                                                    f"{type(e).__name__}: {e}")
        stats, parts = WindowStats(), []
        keys = text_keys(table.column(scorer.options.text_column)) if scorer.options.reuse else None
        for window in scorer.windows(table):
            if self.reuse is None:
                prepared = scorer.prepare(window)
                parts.append(scorer.assemble(prepared, scorer.infer(prepared)))
                stats.add(prepared.stats)
                continue
            plan = self.reuse.plan(window, scorer.options.text_column, list(scorer.options.output_columns()))
            prepared = scorer.prepare(window.take(plan.infer) if plan.reused else window)
            self.reuse.accept(plan)
            out = self.reuse.combine(plan, scorer.assemble(prepared, scorer.infer(prepared)))
            parts.append(out)
            stats.add(replace(prepared.stats, rows=out.num_rows, reused=plan.reused,
                              errors=out.num_rows - out.column("error").null_count))
        return PieceResult(pa.concat_tables(parts), stats, keys=keys)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        self._maybe_fail()
        meta = [c for c in META_COLUMNS if c in batch.column_names]
        data = batch.drop_columns(meta)
        scorer = self.scorer
        scorer.check_columns(data.schema)
        data = data.select(scorer.input_columns())
        stats, parts = WindowStats(), []
        for window in scorer.windows(data):
            prepared = scorer.prepare(window)
            parts.append(scorer.assemble(prepared, scorer.infer(prepared)))
            stats.add(prepared.stats)
        out = pa.concat_tables(parts) if parts else scorer.output_schema(data.schema).empty_table()
        for c in meta:
            out = out.append_column(batch.schema.field(c), batch.column(c))
        for name, value in ((SLOTS_COL, stats.slots), (CLIPPED_COL, stats.clipped)):
            col = np.zeros(out.num_rows, dtype=np.int64)
            col[:1] = value
            out = out.append_column(name, pa.array(col))
        return out

    def _maybe_fail(self) -> None:
        if not self.failpoint or self.calls < 2:  # the second call: some rows were scored before the fault
            return
        kind, _, marker = self.failpoint.partition(":")
        seconds = 0.0
        if kind == "slow":  # slow:<seconds>:<marker>
            seconds, _, marker = marker.partition(":")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: only one actor fires it
        except FileExistsError:
            return
        os.close(fd)
        if kind == "crash":
            os._exit(1)
        if kind == "hang":
            while True:
                time.sleep(60)
        if kind == "slow":
            time.sleep(float(seconds))
            return
        raise RuntimeError(f"docscore failpoint {self.failpoint}")



def replace_memo(reuse: Reuse, cap: int) -> Reuse:
    out = Reuse(reuse.files, reuse.index, reuse.load_s)
    out.memo.cap = cap
    return out


def start_actors(ray, plan: WorkerPlan, bundle: str, options: ScoreOptions, endpoint: str | None,
                  reuse=None) -> list:
    """The scoring actors: restarted when their process dies, their calls retried (a crash loses no row)."""
    cls = ray.remote(ScoringActor).options(num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None,
                                           max_restarts=-1, max_task_retries=-1,
                                           max_concurrency=plan.calls_per_actor)
    failpoint = os.environ.get("DOCSCORE_RAY_FAILPOINT")
    return [cls.remote(bundle, options.replace(threads=plan.threads), failpoint=failpoint, endpoint=endpoint,
                       reuse=reuse) for _ in range(plan.workers)]


def kill_actor(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as e:  # noqa: BLE001 - already dead
        log.debug("ray.kill: %s: %s", type(e).__name__, e)


class ActorRegistry:
    """The handles of one run's scoring actors, each registered by the actor itself as it starts (a restarted
    actor registers again under the same id)."""

    def __init__(self):
        self.actors = {}

    def add(self, actor_id: str, handle) -> None:
        self.actors[actor_id] = handle

    def handles(self) -> list:
        return list(self.actors.values())


def kill_actors(ray, registry, timeout_s: float = 30.0) -> None:
    """Kill a run's scoring actors, then the registry. Never raises: the run's own outcome is what counts."""
    try:
        handles = ray.get(registry.handles.remote(), timeout=timeout_s)
    except Exception as e:  # noqa: BLE001
        log.warning("could not list this run's Ray actors to stop them (%s: %s); they stop when this process "
                    "drops them", type(e).__name__, e)
        handles = []
    for handle in [*handles, registry]:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as e:  # noqa: BLE001 - already dead
            log.debug("ray.kill: %s: %s", type(e).__name__, e)
