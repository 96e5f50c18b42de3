"""The public dataset API: a ``ray.data.Dataset`` in, a scored one out (Ray Data ``map_batches``), for users
composing their own pipelines."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from docscore.batch.options import ScoreOptions
from docscore.batch.ray.actors import ScoringActor
from docscore.batch.ray.cluster import BATCH_ROWS, WorkerPlan, import_ray, plan_workers
from docscore.bundle import Bundle

log = logging.getLogger(__name__)


def score_dataset(ds, bundle: str | os.PathLike | Bundle, options: ScoreOptions | None = None, *,
                  workers: int | None = None, batch_rows: int | None = None, plan: WorkerPlan | None = None,
                  failpoint: str | None = None, registry=None):
    """Score a ``ray.data.Dataset`` with the scorer of ``docscore score``; returns the scored (lazy) dataset.

    Output rows carry the columns of a local output (id / passthrough columns, ``label``, ``score``,
    ``score_<label>``, ``num_tokens``, ``num_chunks``, ``unk_fraction``, ``error``), each batch's rows in their
    input order. Blocks leave in the order they finish: join on the id column, or set
    ``DataContext.get_current().execution_options.preserve_order = True`` (which, in ray 2.60, runs the actors
    one call at a time). Rows whose text is null, empty or not a string get an ``error`` instead of scores; no
    block is dropped.

    Args:
        ds: a dataset with the text column (and the id / passthrough columns the options name).
        bundle: a bundle directory every Ray node can read at this path.
        options: scoring options (columns, device, variant, batching, long documents).
        workers: scoring actors; ``None``: one per CPU (sharing all CPUs but one) or one per GPU.
        batch_rows: rows per actor call; ``None``: :data:`BATCH_ROWS` or ``options.sort_window`` if smaller.
        plan: a ready :class:`WorkerPlan` (overrides ``workers``); ``None`` sizes one from the cluster.
        failpoint: fault injection for tests (see :class:`ScoringActor`).
        registry: an :class:`ActorRegistry` actor each scoring actor registers its handle with, so that the
            caller can ``ray.kill`` them when it is done. Without one, Ray Data
            kills them when iteration stops early, and otherwise only drops its references to them.
    """
    ray = import_ray()
    options = options or ScoreOptions()
    bundle_path = str(Path(bundle.path if isinstance(bundle, Bundle) else bundle).resolve())
    if plan is None:
        res = ray.cluster_resources()
        plan = plan_workers(res.get("CPU", 0), res.get("GPU", 0), options.device, workers, options.threads)
    actor_options = options.replace(threads=plan.threads)
    compute = ray.data.ActorPoolStrategy(
        size=plan.workers,
        max_tasks_in_flight_per_actor=plan.calls_per_actor,  # queued calls would pile up on the first actor up
        **({"max_concurrent_calls_per_actor": plan.calls_per_actor, "enable_true_multi_threading": True}
           if plan.calls_per_actor > 1 else {}),
    )
    log.info("scoring on %d Ray actor(s): %.2f CPU, %g GPU, %d ORT thread(s) each", plan.workers, plan.actor_cpus,
             plan.actor_gpus, plan.threads)
    return ds.map_batches(
        ScoringActor,
        fn_constructor_args=(bundle_path, actor_options),
        fn_constructor_kwargs={"failpoint": failpoint, "registry": registry},
        batch_format="pyarrow",
        batch_size=batch_rows or min(BATCH_ROWS, options.sort_window),
        compute=compute,
        num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus or None,
        udf_modifying_row_count=False,
    )
