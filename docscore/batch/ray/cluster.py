"""Ray itself: importing it, the options of a run, sizing the actor pool to the cluster, and starting or joining
Ray (a private local instance, or a cluster address probed first with a timeout)."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'docscore[ray]'"
RESERVED_CPUS = 1.0  # kept free of actors for Ray Data's read / repartition tasks (each asks for 1 CPU)
BATCH_ROWS = 256  # rows per block and actor call: 2048 left one of two actors idle on a 1000-row archive here
STALL_TIMEOUT_S = 300.0  # default RayOptions.stall_timeout_s: no progress for this long fails the run
MAX_TMP_DIR_CHARS = 40  # Ray puts Unix sockets under <tmp>/session_<date>_<pid>/sockets/: 107 bytes at most


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




def resources(ray) -> str:
    try:
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception as e:  # noqa: BLE001 - the message must still come out
        return f"Ray's resources are unknown ({type(e).__name__}: {e})"
    return "Ray has available (free/total): " + ", ".join(f"{k} {free.get(k, 0):g}/{total[k]:g}"
                                                          for k in ("CPU", "GPU") if k in total)
