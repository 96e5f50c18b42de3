"""PyTorch ``DocClassifier`` → one ONNX graph (body + head) with symbolic batch and sequence axes."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

import onnx
import torch

from docscore.errors import ConfigError, ExportError, ParityError

log = logging.getLogger(__name__)

BATCH, SEQUENCE = "batch", "sequence"
EXTERNAL_SUFFIX = ".data"


def set_attention(model, attention: str) -> str:
    """Switch the body to ``eager`` or ``sdpa`` attention; returns what the body really uses afterwards."""
    body = model.body
    try:
        body.set_attn_implementation(attention)
    except (ValueError, AttributeError, NotImplementedError) as e:
        # Some bodies (DeBERTa-v2) implement only their own attention; keep it and say so.
        log.warning("%s cannot use attention=%r (%s); exporting with its own attention", type(body).__name__,
                    attention, e)
    return getattr(body.config, "_attn_implementation", None) or attention


def trace_inputs(input_names, batch: int, seq: int, vocab_size: int, pad_id: int) -> tuple[torch.Tensor, ...]:
    """A deterministic example batch with real padding in one row, so mask handling is traced, not folded."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab_size, 1000), (batch, seq), generator=g)  # (B, T)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2:] = 0
    ids[-1, seq // 2:] = pad_id
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(arrays[n] for n in input_names)


def export_graph(model, input_names, output_name: str, path: Path, *, exporter: str, opset: int,
                 trace_shape: tuple[int, int], pad_id: int) -> None:
    """Run the chosen exporter and write ``path`` (plus any external data the exporter chose to write)."""
    vocab = int(getattr(model.body.config, "vocab_size", 1000))
    args = trace_inputs(input_names, *trace_shape, vocab_size=vocab, pad_id=pad_id)
    names = list(input_names)
    kwargs = dict(input_names=names, output_names=[output_name], opset_version=opset)
    if exporter == "legacy":
        kwargs["dynamic_axes"] = {**{n: {0: BATCH, 1: SEQUENCE} for n in names}, output_name: {0: BATCH}}
        kwargs["dynamo"] = False
        kwargs["do_constant_folding"] = True
    elif exporter == "dynamo":
        batch, seq = torch.export.Dim(BATCH), torch.export.Dim(SEQUENCE)
        kwargs["dynamic_shapes"] = {n: {0: batch, 1: seq} for n in names}
        kwargs["dynamo"] = True
        kwargs["external_data"] = True  # writes <file>.data only when needed; we re-pack below anyway
    else:
        raise ConfigError(f"unknown exporter {exporter!r}")
    log.info("exporting with the %s exporter, opset %d, trace shape %s", exporter, opset, trace_shape)
    buf = io.StringIO()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        # The legacy exporter's deprecation and TracerWarnings are expected: the shape sweep of the parity gate
        # is what proves the trace generalises. The dynamo exporter prints progress to stdout.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, args, str(path), **kwargs)
        except Exception as e:  # exporter internals raise many types; the user needs what failed and what to try
            other = "dynamo" if exporter == "legacy" else "legacy"
            raise ExportError(f"the {exporter} exporter failed on {type(model.body).__name__} (opset {opset}): "
                              f"{type(e).__name__}: {e}. Try --exporter {other} or another --opset.") from e
    for line in buf.getvalue().splitlines():
        log.debug("torch.onnx: %s", line)


def dims(value_info) -> list:
    """Shape of a graph input/output: ``dim_param`` strings for symbolic axes, ints for fixed ones."""
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in
            value_info.type.tensor_type.shape.dim]


def check_symbolic_axes(model: onnx.ModelProto, input_names, output_name: str) -> dict:
    """Refuse a graph whose batch or sequence axis was pinned to a number while tracing.

    Returns:
        ``{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}`` as recorded in the manifest.
    """
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    problems = []
    missing = [n for n in input_names if n not in inputs]
    if missing:
        problems.append(f"inputs {missing} missing from the graph (it has {list(inputs)})")
    for name in input_names:
        if name in inputs:
            shape = dims(inputs[name])
            if len(shape) != 2 or not all(isinstance(d, str) and d != "?" for d in shape):
                problems.append(f"input {name} has shape {shape}, expected two symbolic axes [batch, sequence]")
    if output_name not in outputs:
        problems.append(f"output {output_name!r} missing (graph outputs: {list(outputs)})")
    elif not isinstance(dims(outputs[output_name])[0], str):
        problems.append(f"output {output_name} has a fixed batch axis: {dims(outputs[output_name])}")
    if problems:
        raise ParityError("the exported graph is not dynamic: " + "; ".join(problems)
                          + ". Trace with batch >= 2 and declare dynamic axes for every input.")

    def describe(v):
        return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name, "shape": dims(v)}

    return {"inputs": {n: describe(inputs[n]) for n in input_names},
            "outputs": {output_name: describe(outputs[output_name])}}


def save_model(model: onnx.ModelProto, path: Path, external: bool) -> list[str]:
    """Save a graph as one ``.onnx`` file, or with all weights in one ``<name>.data`` file beside it.

    Tensors under 1 KiB stay inline: ONNX Runtime must read small shape/axes constants during shape inference
    and refuses them from external data ("Cannot parse data from external tensors").

    Returns:
        the file names written (relative to ``path``'s directory).
    """
    path = Path(path)
    location = path.name + EXTERNAL_SUFFIX
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
        return [path.name, location]
    onnx.save_model(model, str(path))
    return [path.name]


def weights_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.state_dict().values())


def export_fp32(model, spec, path: Path, *, exporter: str, opset: int, trace_shape: tuple[int, int], pad_id: int,
                external: bool, scratch: Path) -> dict:
    """Export, check the axes, and write ``path`` (and its external data when ``external``).

    The raw exporter output goes to ``scratch`` first: exporters write external data under names of their own,
    and the bundle wants one predictable ``<file>.data`` per graph.

    Returns:
        ``{"files": [...], "io": {...}}``.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    raw = scratch / "raw.onnx"
    export_graph(model, spec.input_names, spec.output_name, raw, exporter=exporter, opset=opset,
                 trace_shape=trace_shape, pad_id=pad_id)
    graph = onnx.load(str(raw), load_external_data=True)
    io_spec = check_symbolic_axes(graph, spec.input_names, spec.output_name)
    files = save_model(graph, path, external)
    del graph
    shutil.rmtree(scratch)
    onnx.checker.check_model(str(path))  # by path: works above 2 GiB too
    return {"files": files, "io": io_spec}
