"""What a benchmark needs to know about a bundle before it runs: the body's size for the FLOP counts (whether a
variant can run on this host is :func:`docscore.runtime.choose.cannot_run`)."""

from __future__ import annotations

import json
from pathlib import Path



def body_dims(bundle, checkpoint: str | None) -> tuple[int, int] | None:
    """(hidden size, layers) for the attention FLOPs, from the bundle manifest or the checkpoint config."""
    body = bundle.manifest.get("export", {}).get("body") or {}
    if not body and checkpoint:
        body = json.loads((Path(checkpoint) / "config.json").read_text()).get("body_config", {})
    hidden = body.get("hidden_size") or body.get("dim")
    layers = body.get("num_hidden_layers") or body.get("n_layers")
    return (int(hidden), int(layers)) if hidden and layers else None
