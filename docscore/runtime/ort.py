"""ONNX Runtime sessions and tokenizer → numpy feeds, shared by the parity gate and the scorer (no torch)."""

from __future__ import annotations

import logging
import os

import numpy as np

from docscore.errors import DeviceError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# ORT's CUDA provider multiplies fp32 matrices in TF32 by default (onnxruntime #19288); torch does not, so an fp32
# parity gate on CUDA, and fp32 scores that match the CPU's, need it off.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}


def providers_for(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return [("CUDAExecutionProvider", dict(CUDA_PROVIDER_OPTIONS)), "CPUExecutionProvider"]
    raise DeviceError(f"unknown device {device!r}; choose one of {DEVICES}")


def ort_build() -> str:
    """The installed ONNX Runtime in words: ``onnxruntime-gpu 1.31.1 (built for CUDA 13.0)`` or ``onnxruntime
    1.32.0 (CPU build)``, read from the package's own build record."""
    import onnxruntime as ort

    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:  # very old builds
        return f"onnxruntime {ort.__version__}"
    name = getattr(info, "package_name", "onnxruntime")
    cuda = getattr(info, "cuda_version", None)
    return f"{name} {ort.__version__} ({f'built for CUDA {cuda}' if cuda else 'CPU build'})"


def check_providers(device: str, active: list[str], available: list[str], build: str | None = None) -> None:
    """Fail loudly when CUDA was asked for but the session does not run on it (ORT falls back silently).

    Args:
        build: the installed ONNX Runtime in words (``ort_build()``), named in the error.
    """
    if device == "cuda" and "CUDAExecutionProvider" not in active:
        build = build or ort_build()
        hint = (
            "it has no CUDA provider: install docscore[gpu] (onnxruntime-gpu >= 1.27 for CUDA 13; "
            "onnxruntime-gpu==1.26.0 for CUDA 12) instead of onnxruntime"
            if "CUDAExecutionProvider" not in available
            else "its CUDA provider failed to start: this host's NVIDIA driver, CUDA runtime, cuBLAS or cuDNN "
            "libraries do not match that CUDA version (see docs/gpu.md)"
        )
        raise DeviceError(f"--device cuda was requested but {build} runs this session on {active}: {hint}")


def create_session(model_path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                   arena: bool = True):
    """An ``InferenceSession`` on the requested device, with the provider actually checked.

    Args:
        model_path: the ``.onnx`` file.
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads for the CPU provider; ``None`` lets ORT pick (all physical cores).
        arena: keep ORT's CPU memory arena; off trades a little speed for a flat memory profile.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 3
    providers = providers_for(device)
    try:
        sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types
        if device == "cuda":
            raise DeviceError(f"cannot create a CUDA session for {model_path} with {ort_build()}: {e}") from e
        raise
    check_providers(device, sess.get_providers(), ort.get_available_providers())
    return sess


def pad_feed(ids: list[list[int]], type_ids: list[list[int]], length: int, input_names, pad_id: int = 0):
    """Right-pad token id lists into one ``(B, T)`` int64 array per model input.

    Args:
        ids / type_ids: per sequence, its token ids and token type ids (no padding).
        length: the padded length ``T`` (at least the longest sequence).
        input_names: the model's inputs (``token_type_ids`` only where the model has it).
        pad_id: the tokenizer's pad token id.
    """
    n = len(ids)
    input_ids = np.full((n, length), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((n, length), dtype=np.int64)  # (B, T), 1 = real token
    types = np.zeros((n, length), dtype=np.int64) if "token_type_ids" in input_names else None
    for r, seq in enumerate(ids):
        k = len(seq)
        input_ids[r, :k] = seq
        mask[r, :k] = 1
        if types is not None:
            types[r, :k] = type_ids[r]
    arrays = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in input_names}


def encodings_to_feed(encodings, input_names, pad_id: int = 0, length: int | None = None) -> dict[str, np.ndarray]:
    """Right-pad a list of ``tokenizers.Encoding`` to ``length`` tokens (default: the longest) per model input."""
    t = max(length or max((len(e.ids) for e in encodings), default=1), 1)
    return pad_feed([e.ids for e in encodings], [e.type_ids for e in encodings], t, input_names, pad_id)
