"""Scale-out: the same :class:`~docscore.batch.scorer.Scorer` inside Ray Data ``map_batches``.

Two entry points:

- :func:`score_dataset`: a ``ray.data.Dataset`` in, a scored one out, for users composing their own pipelines.
- :func:`score_files_ray`: what ``docscore score --engine ray`` runs. Ray scores, docscore keeps the file commit
  protocol: the driver plans the shards, Ray reads them (row groups, tagged with shard and row number), repartitions
  them into batches, and scores them on a pool of actors; the driver puts the scored rows back in input order
  (each row carries its shard and row number) and hands them to the local runner's writer, which commits parts,
  outputs, the run manifest and ``_SUCCESS`` exactly as :func:`~docscore.batch.runner.score_files` does. So the
  output layout and manifest are the same, a run can move between engines, and a rerun after any failure gives one
  copy of every row. Ray's ``write_parquet`` is never used: it appends to the directory and is not atomic.

Resource rules, each learnt from a hang or a silent slowdown with ray 2.60:

- Actors share ``CPUs - 1``: Ray Data's read and repartition tasks ask for a whole CPU, so actors taking every CPU
  leave the reads waiting forever, with no warning.
- A file of one row group is one block, and a block goes to one actor call: blocks are repartitioned into
  ``batch_rows``-row blocks when they would leave actors idle.
- ``ray.init()`` without an address joins any cluster recorded under ``/tmp/ray``; a local run passes
  ``address="local"``. A dead address is retried by Ray for minutes; it is probed first, with a timeout.
- A run kills its actors when it ends, however it ends (done, failed, abandoned): each actor registers its handle
  with a small per-run registry actor, and the driver kills them all (``ray.kill``) in a ``finally``. Left to Ray
  Data, a failed run only drops its references to its actors (no ``ray.kill`` unless the consumer stops early), and
  the exception's traceback, or a reference cycle until the next garbage collection, keeps them alive with their
  CPUs: the next run in the same process then waited forever for its actor pool.
- Nothing waits forever: when no block moves through the pipeline for ``RayOptions.stall_timeout_s`` (actors that
  cannot be placed, a hung call), the run fails with :class:`RayStallError`, naming what was waiting and what Ray
  had free.
- Crashed actors are restarted and their calls retried (Ray Data's defaults for actor pools: ``max_restarts=-1``,
  ``max_task_retries=-1``). A bad row is a per-row ``error`` from the scorer, never a dropped block:
  ``max_errored_blocks`` is not used.

GPU: ``device="cuda"`` runs one actor per GPU (``num_gpus=1``) with two concurrent calls per actor, so one call
tokenises the next batch on the actor's CPUs while the other runs on the GPU.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from docscore.batch.commit import file_digest
from docscore.batch.inputs import InputFile, Shard, hive_partitions
from docscore.batch.options import ScoreOptions
from docscore.batch.runner import (_DONE, Progress, RunSummary, _Pipeline, _RowStream, _Stop,
                                   _types, run_shards)
from docscore.batch.scorer import UNK_WARN_FRACTION, Scorer, WindowStats
from docscore.batch.state import RunState
from docscore.storage import has_scheme
from docscore.bundle import Bundle
from docscore.errors import ConfigError, DeviceError, DocscoreError, InputDataError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'docscore[ray]'"
RESERVED_CPUS = 1.0  # kept free of actors for Ray Data's read / repartition tasks (each asks for 1 CPU)
BATCH_ROWS = 256  # rows per block and actor call: 2048 left one of two actors idle on a 1000-row archive here
STALL_TIMEOUT_S = 300.0  # default RayOptions.stall_timeout_s: no progress for this long fails the run
MAX_TMP_DIR_CHARS = 40  # Ray puts Unix sockets under <tmp>/session_<date>_<pid>/sockets/: 107 bytes at most

# Columns the driver adds to every row so it can check the order and route rows back to their shard.
SHARD_COL, ROW_COL, READ_ERROR_COL = "_docscore_shard", "_docscore_row", "_docscore_read_error"
SLOTS_COL, CLIPPED_COL = "_docscore_slots", "_docscore_clipped"  # per-call stats, on the first row of a call
_META = (SHARD_COL, ROW_COL, READ_ERROR_COL)


def import_ray():
    """Import ``ray`` and ``ray.data``, or raise :class:`ConfigError` saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra brings pandas / pyarrow pins Ray Data needs
    except ImportError as e:
        raise ConfigError(f"the ray engine needs Ray Data, which is not installed ({e}). Install it with: "
                          f"{INSTALL_HINT}   (or score on this machine with --engine local)") from e
    return ray


class RayStallError(DeviceError):
    """No block moved through the Ray pipeline for ``RayOptions.stall_timeout_s`` (its actors or read tasks found
    no room, or a call hung). The message names what was waiting and the resources Ray had available."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide Ray scores; the scoring itself is set by :class:`ScoreOptions`.

    Args:
        address: ``None`` or ``"local"`` starts a private Ray instance on this machine (never joining a cluster
            recorded under ``/tmp/ray``); ``"auto"`` joins the cluster started here with ``ray start``;
            ``"host:6379"`` or ``"ray://host:10001"`` joins that cluster.
        workers: scoring actors. ``None``: one per CPU on CPU (sharing all CPUs but one), one per GPU on CUDA.
        num_cpus: CPUs of a local instance; ``None`` lets Ray count them. Ignored when joining a cluster.
        tmp_dir: Ray's session files (logs, sockets, spilled objects) for a local instance; ``None``: Ray's
            default (``/tmp/ray``). Keep it short: Ray puts Unix sockets below it.
        connect_timeout_s: how long to wait for a cluster's address to answer before failing.
        batch_rows: rows per actor call and per block; ``None``: :data:`BATCH_ROWS` (or the options'
            ``sort_window`` if smaller). Small blocks keep every actor busy (a few big blocks queue behind the
            first actor to start); each call still sorts its rows by length before batching them.
        stall_timeout_s: how long a run may wait for room for its actors, or go without any block moving through
            the pipeline, before failing with :class:`RayStallError` (instead of waiting forever). Raise it when one
            actor call (or loading the model in a new actor) can legitimately take longer.
    """

    address: str | None = None
    workers: int | None = None
    num_cpus: int | None = None
    tmp_dir: str | None = None
    connect_timeout_s: float = 10.0
    batch_rows: int | None = None
    stall_timeout_s: float = STALL_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.num_cpus is not None and self.num_cpus < 2:
            raise ConfigError(f"a local Ray instance needs at least 2 CPUs (one is kept for reading), got "
                              f"{self.num_cpus}; use --engine local on one CPU")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be at least 1, got {self.batch_rows}")
        if self.tmp_dir and len(os.path.abspath(self.tmp_dir)) > MAX_TMP_DIR_CHARS:
            raise ConfigError(f"--ray-tmp-dir {os.path.abspath(self.tmp_dir)} is too long ("
                              f"{len(os.path.abspath(self.tmp_dir))} characters): Ray puts Unix sockets below it, "
                              f"which allow 107 bytes; use a path of at most {MAX_TMP_DIR_CHARS} characters")
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"connect_timeout_s must be positive, got {self.connect_timeout_s}")
        if self.stall_timeout_s <= 0:
            raise ConfigError(f"stall_timeout_s must be positive, got {self.stall_timeout_s}")

    @property
    def local(self) -> bool:
        return self.address in (None, "", "local")


# --- resources ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPlan:
    """How many scoring actors, and what each asks Ray for."""

    workers: int
    actor_cpus: float  # CPUs reserved per actor (fractional when actors outnumber the CPUs left to them)
    actor_gpus: float  # 1 per actor on CUDA, else 0
    threads: int  # ONNX Runtime intra-op threads per actor
    calls_per_actor: int  # concurrent calls per actor: 2 on CUDA (tokenise one batch while the GPU runs another)


def plan_workers(cluster_cpus: float, cluster_gpus: float, device: str, workers: int | None = None,
                 threads: int | None = None) -> WorkerPlan:
    """Size the actor pool so that Ray Data's reads always find a free CPU.

    Args:
        cluster_cpus: CPUs of the Ray cluster (``ray.cluster_resources()["CPU"]``).
        cluster_gpus: GPUs of the Ray cluster.
        device: ``cpu`` or ``cuda``.
        workers: actors asked for; ``None`` picks one per CPU (CPU) or per GPU (CUDA).
        threads: ORT threads asked for; ``None``: the whole CPUs each actor holds (at least 1).
    """
    room = cluster_cpus - RESERVED_CPUS
    if room <= 0:
        raise ConfigError(f"the Ray cluster has {cluster_cpus:g} CPU(s); scoring needs at least 2 (one is kept for "
                          "reading the input)")
    if device == "cuda":
        if cluster_gpus < 1:
            raise DeviceError("device cuda asked for, but the Ray cluster has no GPU; start the workers with GPUs "
                              "or score with --device cpu")
        n = workers or int(cluster_gpus)
        if n > cluster_gpus:
            raise DeviceError(f"{n} GPU workers asked for, but the Ray cluster has {cluster_gpus:g} GPU(s)")
        share = room / n
        cpus = float(int(share)) if share >= 1 else share
        return WorkerPlan(n, cpus, 1.0, threads or 1, 2)
    n = workers or max(1, int(cluster_cpus))
    share = room / n
    cpus = float(int(share)) if share >= 1 else share
    return WorkerPlan(n, cpus, 0.0, threads or max(1, int(share)), 1)


# --- connecting ---------------------------------------------------------------------------------------------


def resolve_address(address: str) -> str:
    """``auto`` → the address of the cluster started here (``RAY_ADDRESS``, else Ray's record under the temp dir)."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        found = record.read_text().strip()
    except OSError:
        found = ""
    if not found:
        raise DeviceError("--ray-address auto: no Ray cluster was started on this machine (no RAY_ADDRESS, no "
                          f"{record}); start one with `ray start --head`, or give the head's address host:6379")
    return found


def probe_address(address: str, timeout_s: float) -> None:
    """Fail fast, with a clear message, when nothing answers at a cluster's address (Ray itself would retry for
    minutes)."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        host, port = hostport.rstrip("/"), ("10001" if address.startswith("ray://") else "6379")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise DeviceError(
            f"cannot reach a Ray cluster at {address} ({type(e).__name__}: {e}; waited up to {timeout_s:g} s). "
            "Check the head is running (`ray status` there) and pass its address as host:6379 or "
            "ray://host:10001, or leave --ray-address out to score on a local Ray instance"
        ) from e


@contextmanager
def ray_connection(ray_options: RayOptions | None = None):
    """Use the running Ray (left running), or start / join one (shut down on exit). Yields the ``ray`` module."""
    ray = import_ray()
    ray_options = ray_options or RayOptions()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if ray_options.local:
        if ray_options.tmp_dir:
            tmp = os.path.abspath(ray_options.tmp_dir)
            os.makedirs(tmp, exist_ok=True)
            kwargs["_temp_dir"] = tmp
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=ray_options.num_cpus, **kwargs)
    else:
        address = resolve_address(ray_options.address)
        probe_address(address, ray_options.connect_timeout_s)
        if ray_options.tmp_dir:
            log.warning("--ray-tmp-dir applies to a local Ray instance; a cluster keeps the temp dir its nodes "
                        "were started with (`ray start --temp-dir`)")
        t0 = time.perf_counter()
        ray.init(address=address, **kwargs)
    log.info("Ray ready in %.1f s: %s", time.perf_counter() - t0, ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()


# --- the actor --------------------------------------------------------------------------------------------------


class ScoringActor:
    """A :class:`Scorer` living in a Ray actor: one ONNX Runtime session per actor, built once.

    Columns named in :data:`_META` pass through unchanged (after the scored columns); two stats columns carry the
    padded slots and clipped texts of the call on its first row, so the driver can report the pad fraction.

    Args:
        bundle: the bundle directory (every node must see it at this path).
        options: the scoring options; ``threads`` is set per actor by :func:`plan_workers`.
        failpoint: fault injection for tests: ``crash:<marker>`` kills the actor process once (Ray restarts it and
            retries the call), ``raise:<marker>`` raises once (the run fails), ``hang:<marker>`` never returns
            (the run stalls). The marker file makes it once.
        registry: an :class:`_ActorRegistry` handle the actor registers itself with (see :func:`score_files_ray`).
    """

    def __init__(self, bundle: str, options: ScoreOptions, failpoint: str | None = None, registry=None):
        if registry is not None:  # first, so that the driver can kill this actor even while it loads the model
            import ray

            ctx = ray.get_runtime_context()
            ray.get(registry.add.remote(ctx.get_actor_id(), ctx.current_actor))
        self.scorer = Scorer(bundle, options).load()
        self.failpoint = failpoint
        self.calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        self._maybe_fail()
        meta = [c for c in _META if c in batch.column_names]
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
        raise RuntimeError(f"docscore failpoint {self.failpoint}")


# --- the public dataset API ---------------------------------------------------------------------------------------


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
        registry: an :class:`_ActorRegistry` actor each scoring actor registers its handle with, so that the
            caller can ``ray.kill`` them when it is done (:func:`score_files_ray` does). Without one, Ray Data
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


# --- reading, on Ray tasks ------------------------------------------------------------------------------------


def _read_pieces(batch: pa.Table, columns: list[str], schema: pa.Schema, read_batch_rows: int) -> Iterator[pa.Table]:
    """Read row ranges ``[start, stop)`` of input files, tagged with shard and row number. A read failure becomes
    one row with ``_docscore_read_error`` set, so the driver reports the file and the other files go on."""
    n = batch.num_rows
    rels = batch.column("rel").to_pylist() if "rel" in batch.column_names else [""] * n
    for shard, path, rel, start, stop in zip(*(batch.column(c).to_pylist() for c in ("shard", "path")), rels,
                                             *(batch.column(c).to_pylist() for c in ("start", "stop"))):
        row = start
        try:
            src = InputFile(path, hive_partitions(rel), columns, path=path)
            stream = _RowStream(src, start, columns, read_batch_rows, path)
            for rb in stream.take(stop - start):
                table = pa.Table.from_batches([rb]).select(columns).cast(schema)
                yield _tag(table, shard, row, None)
                row += rb.num_rows
        except Exception as e:  # noqa: BLE001 - reported by the driver with the file's name
            empty = pa.table({f.name: pa.nulls(1, f.type) for f in schema}, schema=schema)
            yield _tag(empty, shard, row, f"cannot read rows {row}..{stop}: {type(e).__name__}: {e}")
            return


def _tag(table: pa.Table, shard: int, first_row: int, error: str | None) -> pa.Table:
    n = table.num_rows
    table = table.append_column(SHARD_COL, pa.array(np.full(n, shard, dtype=np.int32)))
    table = table.append_column(ROW_COL, pa.array(np.arange(first_row, first_row + n, dtype=np.int64)))
    return table.append_column(READ_ERROR_COL, pa.array([error] * n, pa.string()))


# --- files: the runner's writer fed by Ray --------------------------------------------------------------------------


def score_files_ray(inputs: list, bundle: str | os.PathLike | Bundle, output_dir: str | os.PathLike,
                    options: ScoreOptions | None = None, ray_options: RayOptions | None = None,
                    progress: Progress | None = None, **ray_fields) -> RunSummary:
    """:func:`~docscore.batch.runner.score_files` with Ray doing the scoring: same outputs, manifest and resume.

    Args:
        inputs: files, directories (every ``*.parquet`` below) or globs. On a cluster the driver plans and writes,
            the actors read: inputs and bundle must be at the same paths on every node (a shared file system).
        bundle: the bundle directory.
        output_dir: where outputs, the run manifest, the summary and ``_SUCCESS`` go (written by this process).
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
    remote = [str(u) for u in [*inputs, bundle, output_dir]
              if not isinstance(u, Bundle) and has_scheme(u) and not str(u).startswith("file://")]
    if remote:
        raise ConfigError(f"--engine ray reads and writes local (or shared-mount) paths only, not {remote[0]}; "
                          "use --engine local for object storage")
    ray_options = replace(ray_options or RayOptions(), **ray_fields)
    if not ray_options.local:  # a dead address fails before the output directory is touched
        probe_address(resolve_address(ray_options.address), ray_options.connect_timeout_s)
    progress = progress or Progress()

    def execute(scorer, state, summary, todo):
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
                _RayPipeline(scorer, state, pinned, progress, summary, ray_options).run(todo)
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)

    # On CPU the options are checked here, once, not in every actor; a CUDA driver may have no GPU: actors check.
    return run_shards(inputs, bundle, output_dir, options, progress, execute,
                      load_scorer=options.device == "cpu")


@dataclass
class _Planned:
    """A shard the driver will feed to the writer: rows ``[done * checkpoint_rows, rows)`` come from Ray."""

    index: int
    shard: Shard
    fp: dict
    rows: int
    parts: int
    done: int
    schema: pa.Schema  # output schema
    input_schema: pa.Schema  # the selected input columns
    row_groups: list  # [(first row, rows)] of the file's row groups


@dataclass
class _Scored:
    """A slice of scored rows, shaped like the runner's prepared window (``table`` + ``stats``)."""

    table: pa.Table
    stats: WindowStats


class _Assembled:
    """Stands in for the scorer in the runner's writer: the rows come back from Ray already assembled."""

    @staticmethod
    def assemble(prepared: _Scored, logits) -> pa.Table:
        return prepared.table


class _ShardFailed(Exception):
    pass


class _RayPipeline(_Pipeline):
    """The runner's writer thread, fed by the driver thread from a Ray dataset instead of the local stages."""

    def __init__(self, scorer: Scorer, state: RunState, options: ScoreOptions, progress: Progress,
                 summary: RunSummary, ray_options: RayOptions):
        super().__init__(_Assembled(), state, options, progress, summary)
        self.real_scorer = scorer
        self.ray_options = ray_options

    def run(self, todo: dict[Shard, dict]) -> None:
        if not todo:
            return
        writer = threading.Thread(target=self._guard, args=(self._write,), name="docscore-write", daemon=True)
        writer.start()
        try:
            self._guard(self._feed, todo)
        finally:
            if self.failure is not None:
                self.stop.set()
            writer.join()
        if self.failure is not None:
            raise self.failure

    def _feed(self, todo: dict[Shard, dict]) -> None:
        groups: dict[pa.Schema, list[_Planned]] = {}
        for i, (shard, fp) in enumerate(todo.items()):
            try:
                planned = self._plan_shard(i, shard, fp)
            except (OSError, pa.ArrowException, InputDataError) as e:
                self._report(shard, fp, e)
                continue
            groups.setdefault(planned.input_schema, []).append(planned)
        for planned in groups.values():  # one dataset (and actor pool) per input schema; usually one
            self._feed_group(planned)
        self._put(self.to_write, _DONE)

    def _report(self, shard: Shard, fp: dict, e: Exception) -> None:
        error = e if isinstance(e, InputDataError) else InputDataError(
            f"cannot read: {type(e).__name__}: {e}", path=shard.path)
        if self.options.fail_fast:
            raise error from e
        self._put(self.to_write, ("error", shard, (fp, error)))

    def _plan_shard(self, index: int, shard: Shard, fp: dict) -> _Planned:
        scorer, opts = self.real_scorer, self.options
        columns = scorer.input_columns()
        src = InputFile(shard.path, shard.partitions, columns, path=shard.path)
        pf = src.pf
        scorer.check_columns(src.schema, path=shard.path)
        input_schema = pa.schema([src.schema.field(c) for c in columns])
        n = pf.metadata.num_rows
        n_parts = max(1, -(-n // opts.checkpoint_rows))
        done = self.state.staging.committed_parts(shard.rel, n_parts) if n_parts > 1 else 0
        # Ray's tasks read the rows on other processes: the content digest is one sequential read here
        fp = {**fp, "sha256": file_digest(shard.path)}
        groups, first = [], 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            groups.append((first, rows))
            first += rows
        return _Planned(index, shard, fp, n, n_parts, done, scorer.output_schema(input_schema), input_schema, groups)

    def _feed_group(self, planned: list[_Planned]) -> None:
        import ray.data

        opts = self.options
        pieces = []  # row ranges to read, one per row group from the resume point on
        for p in planned:
            start = p.done * opts.checkpoint_rows
            for first, rows in p.row_groups:
                lo, hi = max(first, start), first + rows
                if lo < hi:
                    pieces.append({"shard": p.index, "path": str(Path(p.shard.path).resolve()), "rel": p.shard.rel,
                                   "start": lo,
                                   "stop": hi})
        stream = _OrderedRows(self._run_dataset(pieces, planned[0].input_schema) if pieces else iter(()))
        try:
            for p in planned:
                self._feed_shard(p, stream)
            stream.finish()
        finally:
            stream.close()

    def _run_dataset(self, pieces: list[dict], input_schema: pa.Schema) -> Iterator[pa.Table]:
        import ray
        import ray.data
        from ray.data.exceptions import ExecutionTimeoutError

        opts, ropts = self.options, self.ray_options
        res = ray.cluster_resources()
        plan = plan_workers(res.get("CPU", 0), res.get("GPU", 0), opts.device, ropts.workers, opts.threads)
        batch_rows = ropts.batch_rows or min(BATCH_ROWS, opts.sort_window)
        ctx = ray.data.DataContext.get_current()
        saved = ctx.enable_progress_bars
        ctx.enable_progress_bars = False  # library code does not print; the CLI shows its own bars
        registry = ray.remote(num_cpus=0)(_ActorRegistry).remote()
        batches = None
        try:
            ds = ray.data.from_items(pieces, override_num_blocks=len(pieces))  # rows come back in any order
            ds = ds.map_batches(_read_pieces, batch_size=1, batch_format="pyarrow",
                                fn_kwargs={"columns": list(input_schema.names), "schema": input_schema,
                                           "read_batch_rows": min(opts.read_batch_rows, batch_rows)})
            largest = max(p["stop"] - p["start"] for p in pieces)
            if len(pieces) < plan.workers or largest > batch_rows:
                ds = ds.repartition(target_num_rows_per_block=batch_rows)  # no actor idles behind one big block
            ds = score_dataset(ds, self.real_scorer.bundle, opts, batch_rows=batch_rows, plan=plan,
                               failpoint=os.environ.get("DOCSCORE_RAY_FAILPOINT"), registry=registry)
            ds.context.execution_no_progress_timeout_s = ropts.stall_timeout_s  # Ray Data's own stall guard
            batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
            for table in batches:
                if self.stop.is_set():
                    raise _Stop
                yield table
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, DocscoreError):
                raise cause from e
            raise
        except ExecutionTimeoutError as e:
            raise RayStallError(
                f"the Ray pipeline made no progress for {ropts.stall_timeout_s:g} s: no block moved between its "
                f"read, repartition and scoring steps. Waiting: {_running_ops(e)}. Its {plan.workers} scoring "
                f"actor(s) ask for {plan.actor_cpus:g} CPU{f', {plan.actor_gpus:g} GPU' if plan.actor_gpus else ''} "
                f"each, and each read task for 1 CPU; {_resources(ray)}. If other jobs hold the rest, free them or "
                f"add nodes; if one actor call or model load can take longer, raise RayOptions.stall_timeout_s"
            ) from e
        finally:
            ctx.enable_progress_bars = saved
            if batches is not None:
                batches.close()  # given up early (the writer failed, or the driver stopped): shut Ray Data down
            _kill_actors(ray, registry)  # whatever still refers to them (a traceback, a cycle), they hold CPUs

    def _feed_shard(self, p: _Planned, stream: "_OrderedRows") -> None:
        opts, shard = self.options, p.shard
        self._put(self.to_write, ("start", shard, {"fp": p.fp, "rows": p.rows, "parts": p.parts, "done": p.done,
                                                   "schema": p.schema, "columns": _types(p.input_schema)}))
        row = p.done * opts.checkpoint_rows
        try:
            for part in range(p.done, p.parts):
                count = min(opts.checkpoint_rows, p.rows - part * opts.checkpoint_rows)
                for table in stream.take(p.index, row, count, shard.path):
                    scored = table.drop_columns([*_META, SLOTS_COL, CLIPPED_COL]).cast(p.schema)
                    self._put(self.to_write, ("window", shard, (_Scored(scored, _stats(table)), None)))
                row += count
                self._put(self.to_write, ("part", shard, part))
        except _ShardFailed as e:
            stream.skip(p.index)
            self._report(shard, p.fp, InputDataError(str(e), path=shard.path))
            return
        self._put(self.to_write, ("end", shard, None))


def _resources(ray) -> str:
    try:
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception as e:  # noqa: BLE001 - the message must still come out
        return f"Ray's resources are unknown ({type(e).__name__}: {e})"
    return "Ray has available (free/total): " + ", ".join(f"{k} {free.get(k, 0):g}/{total[k]:g}"
                                                          for k in ("CPU", "GPU") if k in total)


def _running_ops(e: Exception) -> str:
    lines = [line.strip()[2:] for line in str(e).splitlines() if line.strip().startswith("- ")]
    return "; ".join(lines) if lines else (str(e).splitlines() or [type(e).__name__])[0]


class _ActorRegistry:
    """The handles of one run's scoring actors, each registered by the actor itself as it starts (a restarted
    actor registers again under the same id)."""

    def __init__(self):
        self.actors = {}

    def add(self, actor_id: str, handle) -> None:
        self.actors[actor_id] = handle

    def handles(self) -> list:
        return list(self.actors.values())


def _kill_actors(ray, registry, timeout_s: float = 30.0) -> None:
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


def _stats(table: pa.Table) -> WindowStats:
    errors = table.num_rows - table.column("error").null_count
    return WindowStats(rows=table.num_rows, errors=errors,
                       sequences=int(pa.compute.sum(table.column("num_chunks")).as_py() or 0),
                       tokens=int(pa.compute.sum(table.column("num_tokens")).as_py() or 0),
                       slots=int(pa.compute.sum(table.column(SLOTS_COL)).as_py() or 0),
                       clipped=int(pa.compute.sum(table.column(CLIPPED_COL)).as_py() or 0),
                       unk_rows=int(pa.compute.sum(pa.compute.greater(table.column("unk_fraction"),
                                                                      UNK_WARN_FRACTION)).as_py() or 0))


class _OrderedRows:
    """Scored tables from Ray, in any order, handed out shard by shard in exact row counts.

    Ray Data returns blocks as they finish (``preserve_order`` would serialise the actors: measured here, 4 one-second
    calls on 2 actors took 7.1 s with it, 3.5 s without). Every row carries its shard and row number, so each table
    is cut into runs of consecutive rows, kept until the writer's cursor reaches them. Memory holds only the rows
    that finished ahead of a slower block.
    """

    def __init__(self, tables: Iterator[pa.Table]):
        self._tables = tables
        self._runs: dict[tuple[int, int], pa.Table] = {}  # (shard, first row) -> run of consecutive rows
        self._failed: set[int] = set()

    def close(self) -> None:
        close = getattr(self._tables, "close", None)
        if close is not None:
            close()  # stops the Ray execution if the driver gave up early

    def _pull(self) -> bool:
        """Cut the next table from Ray into runs; False when Ray has no more."""
        table = next(self._tables, None)
        if table is None:
            return False
        if not table.num_rows:
            return True
        shards = table.column(SHARD_COL).to_numpy()
        rows = table.column(ROW_COL).to_numpy()
        bad = table.column(READ_ERROR_COL).is_valid().to_numpy(zero_copy_only=False).astype(np.int8)
        cuts = np.flatnonzero((np.diff(shards) != 0) | (np.diff(rows) != 1) | (np.diff(bad) != 0)) + 1
        for lo, hi in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(rows)]))):
            if int(shards[lo]) not in self._failed:
                self._runs[(int(shards[lo]), int(rows[lo]))] = table.slice(lo, hi - lo)
        return True

    def take(self, shard: int, first_row: int, n: int, path) -> Iterator[pa.Table]:
        """Yield rows ``[first_row, first_row + n)`` of a shard, in order; raise :class:`_ShardFailed` at a row
        that could not be read."""
        row, end = first_row, first_row + n
        while row < end:
            run = self._runs.pop((shard, row), None)
            if run is None:
                if not self._pull():
                    raise RuntimeError(f"Ray returned no row {row} of {path} ({end - row} rows missing)")
                continue
            error = run.column(READ_ERROR_COL)[0].as_py()
            if error is not None:
                raise _ShardFailed(error)
            if run.num_rows > end - row:  # the rest belongs to the next part
                self._runs[(shard, end)] = run.slice(end - row)
                run = run.slice(0, end - row)
            row += run.num_rows
            yield run

    def skip(self, shard: int) -> None:
        """Drop the rows of a shard that failed to read, now and as they arrive."""
        self._failed.add(shard)
        for key in [k for k in self._runs if k[0] == shard]:
            del self._runs[key]

    def finish(self) -> None:
        """Drain Ray and check that no row was left over."""
        while self._pull():
            pass
        if self._runs:
            (shard, row), run = next(iter(self._runs.items()))
            raise RuntimeError(f"Ray returned {sum(r.num_rows for r in self._runs.values())} rows beyond the "
                               f"inputs (first: shard {shard}, rows {row}..{row + run.num_rows - 1})")
