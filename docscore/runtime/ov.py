"""OpenVINO as a CPU runtime behind the same ``run(feed) -> logits`` call as ONNX Runtime (no torch).

OpenVINO reads the bundle's ``model.onnx`` as it is (the ``bf16`` variant: same file, bf16 inference precision)
and the IR files of the static ``int8`` variant. Precision is part of a variant's identity, never a host default:
a bf16 variant refuses a CPU without native bf16 (AVX512_BF16 or AMX), where OpenVINO would silently run fp32 and
give other scores than the ones the gate verified.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from docscore.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16")
INSTALL_HINT = "pip install 'docscore[openvino]' (the openvino wheel, no torch)"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _core():
    try:
        import openvino as ov
    except ImportError as e:
        raise ConfigError(f"this variant runs on OpenVINO, which is not installed: {INSTALL_HINT}") from e
    return ov.Core()


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (OpenVINO reports the BF16 capability: AVX512_BF16 or AMX)."""
    if not available():
        return False
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - an unknown property on an old release means no
        return False


def _physical_cores() -> int:
    from docscore.runtime.cpu import allowed_cpus, physical_cores, read_cpuinfo

    try:
        return max(1, physical_cores(read_cpuinfo(), allowed_cpus())[0])
    except Exception:  # noqa: BLE001 - an unreadable /proc: the logical count
        return os.cpu_count() or 1


MAX_STREAMS = 4  # a batch of 32 rows split in more slices than this leaves each too small to fill a core


class OpenVINOEngine:
    """A compiled OpenVINO model on the CPU.

    Args:
        model_path: ``.onnx`` or ``.xml`` (IR) file.
        precision: ``f32`` or ``bf16`` (inference precision of every op not quantised to int8).
        threads: inference threads; ``None``: one per physical core this process may run on.
        streams: batches are split across this many OpenVINO streams that run at once (threads shared among
            them); ``None``: one per thread, at most :data:`MAX_STREAMS`.
        output_name: the logits output.
    """

    def __init__(self, model_path: str | os.PathLike, precision: str = "f32", threads: int | None = None,
                 output_name: str = "logits", streams: int | None = None, background: bool = False):
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        core = _core()
        if precision == "bf16" and not native_bf16():
            raise DeviceError(
                f"{model_path} is a bf16 variant, but this CPU has no native bf16 (AVX512_BF16 or AMX): OpenVINO "
                "would run it in fp32 and the scores would not be the verified ones. Use --variant fp32 here.")
        n = int(threads) if threads else _physical_cores()
        self.streams = max(1, min(n, MAX_STREAMS)) if streams is None else max(1, int(streams))
        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": str(self.streams),
                  "INFERENCE_NUM_THREADS": str(max(n, self.streams)), "ENABLE_CPU_PINNING": "NO"}
        if self.streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        self.precision = precision
        self.output_name = output_name
        self.model_path = model_path
        self._error: BaseException | None = None
        self._compiling: threading.Thread | None = None
        if background:
            # compiling takes ~0.5 s of one core (MiniLM); the pipeline reads and tokenises meanwhile
            self._compiling = threading.Thread(target=self._compile_guarded, args=(core, config),
                                               name="docscore-compile", daemon=True)
            self._compiling.start()
        else:
            self._compile(core, config)

    def _compile(self, core, config: dict) -> None:
        self.compiled = core.compile_model(str(self.model_path), "CPU", config)
        self._inputs = {p.get_any_name() for p in self.compiled.inputs}
        self._output = self.compiled.output(self.output_name)
        self._requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        log.info("OpenVINO %s on CPU (%s, %d stream(s), %s thread(s)) for %s",
                 core.get_versions("CPU")["CPU"].build_number, self.precision, self.streams,
                 config["INFERENCE_NUM_THREADS"], self.model_path)

    def _compile_guarded(self, core, config: dict) -> None:
        try:
            self._compile(core, config)
        except BaseException as e:  # noqa: BLE001 - raised where the model is first used
            self._error = e

    def ready(self) -> "OpenVINOEngine":
        """Wait for a background compilation; raise what it raised."""
        if self._compiling is not None:
            self._compiling.join()
            self._compiling = None
        if self._error is not None:
            raise ConfigError(f"OpenVINO could not compile {self.model_path}: {self._error}") from self._error
        return self

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Logits of one batch. With several streams the rows are split into contiguous slices that run at once,
        one per stream: a row's logits do not depend on the rows it runs with (the invariance gate checks this
        for every variant, scored alone, in batches and with one thread), and two streams of one thread kept both
        cores of the 2-core test machine busier than one stream of two (MiniLM 32 x 256, int8 1.15x, bf16 1.08x;
        same logits, bit for bit)."""
        if self._compiling is not None or self._error is not None:
            self.ready()
        feed = {k: v for k, v in feed.items() if k in self._inputs}
        rows = next(iter(feed.values())).shape[0]
        k = min(self.streams, rows)
        if k == 1:
            result = self._requests[0].infer(feed)
            return np.array(result[self._output], dtype=np.float32)  # copy: the request reuses its buffers
        bounds = np.linspace(0, rows, k + 1).astype(int)
        for request, lo, hi in zip(self._requests, bounds, bounds[1:]):
            request.start_async({name: np.ascontiguousarray(v[lo:hi]) for name, v in feed.items()})
        outs = []
        for request in self._requests[:k]:
            request.wait()
            outs.append(np.array(request.get_tensor(self._output).data, dtype=np.float32))
        return np.concatenate(outs)
