"""One inference engine for one variant: ONNX Runtime (plain ``run`` or IO binding) or OpenVINO.

Every engine turns ``(B, T)`` int64 feeds into ``(B, num_labels)`` float32 logits; which runtime and precision
run a variant is recorded in the bundle manifest (``runtime``, ``precision``), so a variant always computes the
same way on every host that runs it.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from docscore.errors import ConfigError, DeviceError
from docscore.runtime.ort import create_session

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")


class Engine:
    """Runs ``(B, T)`` feeds through an ONNX Runtime session and returns ``(B, num_labels)`` float32 logits.

    Args:
        model_path: the variant's ``.onnx`` file.
        device: ``cpu`` or ``cuda`` (checked against the providers the session really uses).
        threads: CPU intra-op threads.
        io_binding: bind inputs and outputs explicitly. On CUDA inputs are copied to the GPU once per batch and
            only the logits come back; on CPU it exercises the same code path.
        arena: keep ORT's CPU memory arena.
        output_name: the logits output.
    """

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 io_binding: bool | None = None, arena: bool = True, output_name: str = "logits"):
        self.device = device
        self.io_binding = (device == "cuda") if io_binding is None else bool(io_binding)
        self.output_name = output_name
        self.session = create_session(model_path, device=device, threads=threads, arena=arena)
        log.info("session on %s (io_binding=%s) for %s", self.session.get_providers(), self.io_binding, model_path)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        single = next(iter(feed.values())).shape[0] == 1
        if single:
            # ONNX Runtime's CPU kernels take another path for a batch of one: measured on MiniLM, a row's fp32
            # logits moved by 3.6e-7 between batch 1 and any batch >= 2 (batches of 2 to 32 were bit-identical).
            # A lone row therefore runs as two copies of itself, so its scores never depend on being alone.
            feed = {k: np.repeat(v, 2, axis=0) for k, v in feed.items()}
        if self.io_binding:
            logits = self._run_bound(feed)
        else:
            (logits,) = self.session.run([self.output_name], feed)
        logits = np.asarray(logits, dtype=np.float32)
        return logits[:1] if single else logits

    def _run_bound(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import onnxruntime as ort

        binding = self.session.io_binding()
        if self.device == "cuda":
            for name, arr in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
            binding.bind_output(self.output_name, "cuda", 0)
        else:
            for name, arr in feed.items():
                binding.bind_cpu_input(name, arr)
            binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        (logits,) = binding.copy_outputs_to_cpu()
        return np.asarray(logits, dtype=np.float32)


def open_engine(model_path: str | os.PathLike, *, runtime: str = "onnxruntime", precision: str = "f32",
                device: str = "cpu", threads: int | None = None, io_binding: bool | None = None,
                arena: bool = True, output_name: str = "logits", background: bool = False):
    """The engine a variant's manifest entry asks for (``runtime`` / ``precision``), on ``device``.

    ``background``: an OpenVINO model compiles in a thread of its own (its checks run here); its first ``run``
    waits for it. ONNX Runtime sessions are always created here (a CUDA session is checked on creation)."""
    if runtime == "onnxruntime":
        return Engine(model_path, device=device, threads=threads, io_binding=io_binding, arena=arena,
                      output_name=output_name)
    if runtime == "openvino":
        if device != "cpu":
            raise DeviceError(f"{model_path} is an OpenVINO variant, which docscore runs on the CPU only; pick a "
                              "variant for --device cuda (fp16, optimized or fp32)")
        from docscore.runtime.ov import OpenVINOEngine

        return OpenVINOEngine(model_path, precision=precision, threads=threads, output_name=output_name,
                              background=background)
    raise ConfigError(f"unknown runtime {runtime!r} in the bundle manifest; known: {RUNTIMES}")
