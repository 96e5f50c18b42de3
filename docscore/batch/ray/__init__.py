"""Scale-out: the same :class:`~docscore.batch.scorer.Scorer` inside Ray actors.

Two entry points:

- :func:`~docscore.batch.ray.dataset.score_dataset`: a ``ray.data.Dataset`` in, a scored one out (Ray Data ``map_batches``), for users
  composing their own pipelines.
- :func:`~docscore.batch.ray.files.score_files_ray`: what ``docscore score --engine ray`` runs. Ray reads and scores; docscore commits. The
  driver plans the shards and cuts them into pieces (row ranges within one row group and one checkpoint part);
  a pool of :class:`ScoringActor` reads each piece itself, from a local path or straight from object storage
  (``s3://...``: URIs and the endpoint travel, credentials come from each node's standard chain), and scores it;
  the driver takes the results back in input order (:class:`OrderedCalls`, which never lets Ray run more than
  ``RayOptions.max_blocks_ahead`` pieces ahead of the oldest unfinished one) and feeds them to the same
  :class:`~docscore.batch.commit.committer.OutputCommitter` as the local engine. So the outputs are the same bytes, the
  manifest the same, a run can move between engines, and a rerun after any failure gives one copy of every row.
  Ray's ``write_parquet`` is never used: it appends to the directory and is not atomic.

Resource rules, each learnt from a hang or a silent slowdown with ray 2.60:

- Actors share ``CPUs - 1``: the driver (and, in :func:`~docscore.batch.ray.dataset.score_dataset`, Ray Data's read tasks, which ask for a
  whole CPU) keep one; actors taking every CPU left the reads waiting forever, with no warning.
- Pieces have at most ``batch_rows`` rows, so a file of one row group still keeps every actor busy. A piece in
  the middle of a row group is read by decoding that row group from its start (Parquet has no row index).
- ``ray.init()`` without an address joins any cluster recorded under ``/tmp/ray``; a local run passes
  ``address="local"``. A dead address is retried by Ray for minutes; it is probed first, with a timeout.
- A run kills its actors when it ends, however it ends (done, failed, abandoned): the driver holds their handles
  and kills them (``ray.kill``) in a ``finally``. Left alone, the exception's traceback, or a reference cycle until
  the next garbage collection, kept them alive with their CPUs, and the next run in the same process waited forever
  for its actors. (:func:`~docscore.batch.ray.dataset.score_dataset` gets the same from a small registry actor each actor registers with.)
- Nothing waits forever: when no call finishes for ``RayOptions.stall_timeout_s`` (actors that cannot be placed, a
  hung call), the run fails with :class:`RayStallError`, naming what was waiting and what Ray had free.
- Crashed actors are restarted and their calls retried (``max_restarts=-1``, ``max_task_retries=-1``). A bad row is
  a per-row ``error`` from the scorer, never a dropped piece.

GPU: ``device="cuda"`` runs one actor per GPU (``num_gpus=1``) with two concurrent calls per actor, so one call
tokenises the next batch on the actor's CPUs while the other runs on the GPU.

Files, one idea each: :mod:`.cluster` (Ray, options, sizing, connecting), :mod:`.actors` (the scoring actor and its
lifetime), :mod:`.pieces` (cutting and reading pieces), :mod:`.dataset` (the Dataset API), :mod:`.files` (the file
engine). The entry points are importable from here; nothing here imports ``ray`` until one is called.
"""

from __future__ import annotations

from docscore.batch.ray.actors import ActorRegistry, ScoringActor, kill_actors
from docscore.batch.ray.cluster import RayOptions, RayStallError, WorkerPlan, import_ray, plan_workers, ray_connection
from docscore.batch.ray.dataset import score_dataset
from docscore.batch.ray.files import score_files_ray

__all__ = ["ActorRegistry", "RayOptions", "RayStallError", "ScoringActor", "WorkerPlan", "import_ray",
           "kill_actors", "plan_workers", "ray_connection", "score_dataset", "score_files_ray"]
