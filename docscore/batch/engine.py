"""One ONNX Runtime session on the chosen device: plain ``run`` or IO binding (CUDA, or CPU for tests)."""

from __future__ import annotations

import logging
import os

import numpy as np

from docscore.runtime import create_session

log = logging.getLogger(__name__)


class Engine:
    """Runs ``(B, T)`` feeds through a model and returns ``(B, num_labels)`` float32 logits.

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
        if self.io_binding:
            return self._run_bound(feed)
        (logits,) = self.session.run([self.output_name], feed)
        return np.asarray(logits, dtype=np.float32)

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
