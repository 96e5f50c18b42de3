"""OpenVINO as a CPU runtime behind the same ``run(feed) -> logits`` call as ONNX Runtime (no torch).

OpenVINO reads the bundle's ``model.onnx`` as it is (the ``bf16`` variant: same file, bf16 inference precision)
and the IR files of the static ``int8`` variant. Precision is part of a variant's identity, never a host default:
a bf16 variant refuses a CPU without native bf16 (AVX512_BF16 or AMX), where OpenVINO would silently run fp32 and
give other scores than the ones the gate verified.
"""

from __future__ import annotations

import logging
import os

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


class OpenVINOEngine:
    """A compiled OpenVINO model on the CPU.

    Args:
        model_path: ``.onnx`` or ``.xml`` (IR) file.
        precision: ``f32`` or ``bf16`` (inference precision of every op not quantised to int8).
        threads: inference threads; ``None`` lets OpenVINO use every physical core.
        output_name: the logits output.
    """

    def __init__(self, model_path: str | os.PathLike, precision: str = "f32", threads: int | None = None,
                 output_name: str = "logits"):
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        core = _core()
        if precision == "bf16" and not native_bf16():
            raise DeviceError(
                f"{model_path} is a bf16 variant, but this CPU has no native bf16 (AVX512_BF16 or AMX): OpenVINO "
                "would run it in fp32 and the scores would not be the verified ones. Use --variant fp32 here.")
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                  "ENABLE_CPU_PINNING": "NO"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        self.precision = precision
        self.output_name = output_name
        self.compiled = core.compile_model(str(model_path), "CPU", config)
        self._inputs = {p.get_any_name() for p in self.compiled.inputs}
        self._output = self.compiled.output(output_name)
        self._request = self.compiled.create_infer_request()
        log.info("OpenVINO %s on CPU (%s) for %s", core.get_versions("CPU")["CPU"].build_number, precision,
                 model_path)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer({k: v for k, v in feed.items() if k in self._inputs})
        return np.array(result[self._output], dtype=np.float32)  # copy: the request reuses its buffers
