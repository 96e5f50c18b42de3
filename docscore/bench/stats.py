"""Percentiles and the model's FLOPs (for the roofline line)."""

from __future__ import annotations

import numpy as np


def percentiles(samples_ms, qs=(50, 95, 99)) -> dict[str, float]:
    """Linear-interpolated percentiles (numpy's default method) of latency samples, in ms."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    out = {f"p{q}": float(np.percentile(a, q)) for q in qs}
    out.update(mean=float(a.mean()), min=float(a.min()), n=int(a.size))
    return out


def linear_flops_per_token(onnx_path) -> float:
    """FLOPs per token of the dense layers: 2·K·N for every 2-D float weight feeding a MatMul/Gemm.

    Embedding tables (Gather) are not compute; attention score FLOPs (which grow with sequence length) are added
    by :func:`attention_flops_per_token` when the body's size is known.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    total = 0.0
    for node in g.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        for name in node.input[1:2]:
            init = inits.get(name)
            if init is not None and len(init.dims) == 2:
                total += 2.0 * init.dims[0] * init.dims[1]
    return total


def attention_flops_per_token(seq_len: int, hidden: int, layers: int) -> float:
    """QKᵀ and A·V: 2·2·T·H FLOPs per token per layer."""
    return 4.0 * seq_len * hidden * layers
