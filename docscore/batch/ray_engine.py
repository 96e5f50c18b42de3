"""Scale-out: the same :class:`~docscore.batch.scorer.Scorer` inside Ray actors.

Two entry points:

- :func:`score_dataset`: a ``ray.data.Dataset`` in, a scored one out (Ray Data ``map_batches``), for users
  composing their own pipelines.
- :func:`score_files_ray`: what ``docscore score --engine ray`` runs. Ray reads and scores; docscore commits. The
  driver plans the shards and cuts them into pieces (row ranges within one row group and one checkpoint part);
  a pool of :class:`ScoringActor` reads each piece itself, from a local path or straight from object storage
  (``s3://...``: URIs and the endpoint travel, credentials come from each node's standard chain), and scores it;
  the driver takes the results back in input order (:class:`_OrderedCalls`, which never lets Ray run more than
  ``RayOptions.max_blocks_ahead`` pieces ahead of the oldest unfinished one) and feeds them to the same
  :class:`~docscore.batch.commit.committer.OutputCommitter` as the local engine. So the outputs are the same bytes, the
  manifest the same, a run can move between engines, and a rerun after any failure gives one copy of every row.
  Ray's ``write_parquet`` is never used: it appends to the directory and is not atomic.

Resource rules, each learnt from a hang or a silent slowdown with ray 2.60:

- Actors share ``CPUs - 1``: the driver (and, in :func:`score_dataset`, Ray Data's read tasks, which ask for a
  whole CPU) keep one; actors taking every CPU left the reads waiting forever, with no warning.
- Pieces have at most ``batch_rows`` rows, so a file of one row group still keeps every actor busy. A piece in
  the middle of a row group is read by decoding that row group from its start (Parquet has no row index).
- ``ray.init()`` without an address joins any cluster recorded under ``/tmp/ray``; a local run passes
  ``address="local"``. A dead address is retried by Ray for minutes; it is probed first, with a timeout.
- A run kills its actors when it ends, however it ends (done, failed, abandoned): the driver holds their handles
  and kills them (``ray.kill``) in a ``finally``. Left alone, the exception's traceback, or a reference cycle until
  the next garbage collection, kept them alive with their CPUs, and the next run in the same process waited forever
  for its actors. (:func:`score_dataset` gets the same from a small registry actor each actor registers with.)
- Nothing waits forever: when no call finishes for ``RayOptions.stall_timeout_s`` (actors that cannot be placed, a
  hung call), the run fails with :class:`RayStallError`, naming what was waiting and what Ray had free.
- Crashed actors are restarted and their calls retried (``max_restarts=-1``, ``max_task_retries=-1``). A bad row is
  a per-row ``error`` from the scorer, never a dropped piece.

GPU: ``device="cuda"`` runs one actor per GPU (``num_gpus=1``) with two concurrent calls per actor, so one call
tokenises the next batch on the actor's CPUs while the other runs on the GPU.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from docscore import storage
from docscore.files import sha256_file
from docscore.batch.commit.committer import OutputCommitter, READ_ERRORS, ShardPlan, plan_shard
from docscore.batch.inputs import InputFile, RowStream, Shard, hive_partitions
from docscore.batch.options import ScoreOptions
from docscore.batch.runner import run_shards
from docscore.batch.summary import Progress, RunSummary
from docscore.batch.reuse import Reuse
from docscore.batch.scorefiles import Keys, text_keys
from docscore.batch.scorer import Scorer, WindowStats
from docscore.bundle import Bundle, load_bundle_uri
from docscore.errors import ConfigError, DeviceError, DocscoreError, InputDataError
from docscore.storage import resolve

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
        stall_timeout_s: how long a run may wait for room for its actors, or go without any call finishing,
            before failing with :class:`RayStallError` (instead of waiting forever). Raise it when one actor call
            (or loading the model in a new actor) can legitimately take longer.
        max_blocks_ahead: the most pieces sent and not yet committed (running, queued, or finished behind a slower
            one): the bound on the reorder buffer. ``None``: 4 per concurrent actor call. When a slow piece holds
            up the oldest slot, no new piece is sent (backpressure), so memory stays flat.
    """

    address: str | None = None
    workers: int | None = None
    num_cpus: int | None = None
    tmp_dir: str | None = None
    connect_timeout_s: float = 10.0
    batch_rows: int | None = None
    stall_timeout_s: float = STALL_TIMEOUT_S
    max_blocks_ahead: int | None = None

    def __post_init__(self) -> None:
        if self.max_blocks_ahead is not None and self.max_blocks_ahead < 1:
            raise ConfigError(f"max_blocks_ahead must be at least 1, got {self.max_blocks_ahead}")
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
        bundle: the bundle directory or URI (a URI is copied into the node's cache and hash-checked there).
        options: the scoring options; ``threads`` is set per actor by :func:`plan_workers`.
        failpoint: fault injection for tests: ``crash:<marker>`` kills the actor process once (Ray restarts it and
            retries the call), ``raise:<marker>`` raises once (the run fails), ``hang:<marker>`` never returns
            (the run stalls), ``slow:<seconds>:<marker>`` sleeps once (a slow piece). The marker file makes it
            once; it fires on an actor's second call.
        registry: an :class:`_ActorRegistry` handle the actor registers itself with (see :func:`score_dataset`).
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


# --- files: Ray produces ordered tables, the committer commits them ------------------------------------------------


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
                _RayFeed(scorer, committer, pinned, ray_options).run(todo)
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)

    # On CPU the options are checked here, once, not in every actor; a CUDA driver may have no GPU: actors check.
    return run_shards(inputs, bundle, output_dir, options, progress, execute,
                      load_scorer=options.device == "cpu")


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one input file: one actor call. It never spans two row groups or two checkpoint
    parts, so a part ends exactly at the end of a piece.

    ``uri`` is what the actor opens (a URI, or an absolute path on a file system every node mounts) and
    ``endpoint`` the S3-compatible endpoint, if any; credentials never travel with a piece (each node uses its
    store's standard chain).
    """

    shard: int  # the shard's index in this run
    uri: str
    rel: str  # the output path: its hive folders are columns
    start: int
    stop: int
    endpoint: str | None = None
    lake_keys: tuple[str, ...] = ()  # the run's hive keys: a file outside their folders reads them as null


@dataclass
class PieceResult:
    """What an actor returns for a piece: the scored rows and their counters, or why the piece could not be read."""

    table: pa.Table | None
    stats: WindowStats
    error: str | None = None
    keys: Keys | None = None  # the rows' text digests (for the shard's score file)


def plan_pieces(index: int, plan: ShardPlan, row_groups: list[int], piece_rows: int, uri: str,
                endpoint: str | None) -> list[Piece]:
    """Cut a shard's rows from its resume point into pieces of at most ``piece_rows`` rows, split at row-group and
    checkpoint-part boundaries.

    Args:
        row_groups: rows per row group of the file.
    """
    cuts = {plan.rows}
    first = 0
    for n in row_groups:
        cuts.add(first)
        first += n
    cuts.update(range(0, plan.rows, plan.checkpoint_rows))
    pieces, bounds = [], sorted(c for c in cuts if c >= plan.start_row)
    for lo, hi in zip(bounds, bounds[1:]):
        for a in range(lo, hi, piece_rows):
            pieces.append(Piece(index, uri, plan.shard.rel, a, min(a + piece_rows, hi), endpoint,
                                plan.shard.lake_keys))
    return pieces


class _RayFeed:
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
        endpoint = _endpoint(resolve(source, opts.s3_endpoint).fs, opts.s3_endpoint) if bundle.uri else None
        reuse = self.committer.reuse
        if reuse is not None and workers.calls_per_actor > 1:  # concurrent calls in one actor: no shared run memo
            reuse = replace_memo(reuse, 0)
        actors = _start_actors(ray, workers, source, opts, endpoint, ray.put(reuse) if reuse is not None else None)
        calls = None
        try:
            calls = _OrderedCalls(actors, window, ropts.stall_timeout_s, workers)
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
                _kill(ray, actor)

    def _plan(self, index: int, shard: Shard, fp: dict, piece_rows: int) -> tuple[ShardPlan, str, list[Piece]]:
        fs = shard.fs or pafs.LocalFileSystem()
        with fs.open_input_file(str(shard.path)) as f:
            src = InputFile(f, shard.partitions, self.scorer.input_columns(), path=shard.name)
            plan = plan_shard(shard, fp, src, self.scorer, self.options, self.committer.state)
            groups = [src.metadata.row_group(g).num_rows for g in range(src.metadata.num_row_groups)]
        sha256 = sha256_file(shard.path, shard.fs)  # the actors read the rows elsewhere: one sequential read here
        uri = shard.uri or str(Path(shard.path).resolve())
        endpoint = _endpoint(shard.fs, self.options.s3_endpoint) if shard.uri else None
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


def _endpoint(fs, default: str | None) -> str | None:
    """The S3-compatible endpoint of a file system (never its credentials), for the actors to open the same
    store."""
    options = storage.s3_options(fs) if fs is not None else None
    if options is None:
        return default
    endpoint = options.get("endpoint_override")
    if not endpoint:
        return default or os.environ.get("AWS_ENDPOINT_URL")
    return endpoint if "://" in endpoint else f"{options.get('scheme') or 'https'}://{endpoint}"


def replace_memo(reuse: Reuse, cap: int) -> Reuse:
    out = Reuse(reuse.files, reuse.index, reuse.load_s)
    out.memo.cap = cap
    return out


def _start_actors(ray, plan: WorkerPlan, bundle: str, options: ScoreOptions, endpoint: str | None,
                  reuse=None) -> list:
    """The scoring actors: restarted when their process dies, their calls retried (a crash loses no row)."""
    cls = ray.remote(ScoringActor).options(num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None,
                                           max_restarts=-1, max_task_retries=-1,
                                           max_concurrency=plan.calls_per_actor)
    failpoint = os.environ.get("DOCSCORE_RAY_FAILPOINT")
    return [cls.remote(bundle, options.replace(threads=plan.threads), failpoint=failpoint, endpoint=endpoint,
                       reuse=reuse) for _ in range(plan.workers)]


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as e:  # noqa: BLE001 - already dead
        log.debug("ray.kill: %s: %s", type(e).__name__, e)


class _OrderedCalls:
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
            f"{f', {plan.actor_gpus:g} GPU' if plan.actor_gpus else ''} each; {_resources(ray)}. If other jobs "
            "hold the rest, free them or add nodes; if one actor call or model load can take longer, raise "
            "RayOptions.stall_timeout_s")


# --- reading, on the actors -------------------------------------------------------------------------------------


def read_piece(piece: Piece, columns: list[str], read_batch_rows: int, cache: dict | None = None) -> pa.Table:
    """The input rows of a piece (the columns the scorer needs, hive keys included), read by whoever calls it.

    Args:
        cache: a dict kept by the caller: the last file opened stays open, and so does its row stream, so the next
            piece of the same row group further on continues from where this one ended (skipping what other actors
            read) instead of decoding the row group again from its start. An actor's reads of a file are therefore
            linear in the file's rows, however many pieces a large row group is cut into.
    """
    cache = cache if cache is not None else {}
    if cache.get("uri") != piece.uri:
        cache.clear()
        loc = resolve(piece.uri, piece.endpoint)
        cache.update(uri=piece.uri, src=InputFile(loc.fs.open_input_file(loc.path),
                                                  hive_partitions(piece.rel, piece.lake_keys), columns,
                                                  path=piece.uri))
    src = cache["src"]
    stream, pos = cache.get("stream"), cache.get("pos", -1)
    if stream is None or not pos <= piece.start or _row_group(src, pos) != _row_group(src, piece.start):
        stream, pos = RowStream(src, piece.start, columns, read_batch_rows, piece.uri), piece.start
    if piece.start > pos:
        for _ in stream.take(piece.start - pos):  # rows of this row group that other actors score
            pass
    cache.update(stream=None)  # a read that fails half-way leaves no stream at an unknown position
    batches = list(stream.take(piece.stop - piece.start))
    cache.update(stream=stream, pos=piece.stop)
    return pa.Table.from_batches(batches, schema=batches[0].schema) if batches else None


def _row_group(src: InputFile, row: int) -> int:
    """The index of the row group holding ``row`` (the number of row groups past the end)."""
    md, first = src.metadata, 0
    for i in range(md.num_row_groups):
        first += md.row_group(i).num_rows
        if row < first:
            return i
    return md.num_row_groups


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
