"""What a benchmark needs to know about a bundle before it runs: whether a variant can run on this host, and the
body's size for the FLOP counts."""

from __future__ import annotations

import json
from pathlib import Path

from docscore.bench.peaks import variant_precision
from docscore.bundle import Bundle


def cannot_run(bundle: Bundle, name: str, device: str) -> str | None:
    """Why variant ``name`` cannot run on this host (no runtime, no native bf16, fp16 off CUDA), else ``None``."""
    entry = bundle.variants[name]
    if device == "cpu" and variant_precision(name, entry) == "fp16":
        return "fp16 is for CUDA"
    if entry.get("runtime", "onnxruntime") == "openvino":
        from docscore.runtime import ov

        if device != "cpu":
            return "OpenVINO variants run on the CPU only"
        if not ov.available():
            return f"needs OpenVINO: {ov.INSTALL_HINT}"
        if entry.get("precision") == "bf16" and not ov.native_bf16():
            return "needs native bf16 (AVX512_BF16 or AMX); this CPU has none"
    return None


def body_dims(bundle, checkpoint: str | None) -> tuple[int, int] | None:
    """(hidden size, layers) for the attention FLOPs, from the bundle manifest or the checkpoint config."""
    body = bundle.manifest.get("export", {}).get("body") or {}
    if not body and checkpoint:
        body = json.loads((Path(checkpoint) / "config.json").read_text()).get("body_config", {})
    hidden = body.get("hidden_size") or body.get("dim")
    layers = body.get("num_hidden_layers") or body.get("n_layers")
    return (int(hidden), int(layers)) if hidden and layers else None
