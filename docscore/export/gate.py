"""The parity gate, one place for export and verify: which texts it runs on (:func:`gate_texts_for`), the PyTorch
side (:func:`load_reference_model`), and one variant judged against it (:func:`run_gate`)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from docscore import gate_texts
from docscore.export.bodies import prepare_body
from docscore.export.options import Tolerance
from docscore.export.parity import FALLBACK_TEXTS, check_variant, read_texts, summarize
from docscore.export.source import SourceModel, open_source

log = logging.getLogger(__name__)


def gate_texts_for(path: Path | None, column: str, limit: int, carried_by: Path | None = None) -> tuple[list[str], str]:
    """The gate's texts: ``path`` (``--verify-data``) when given, else the sample the model or bundle
    ``carried_by`` holds (:mod:`docscore.gate_texts`), else the built-in texts with a loud warning."""
    if path is not None:
        return read_texts(path, column, limit), str(path)
    carried = gate_texts.read(carried_by) if carried_by is not None else None
    if carried is not None:
        texts, source, _ = carried
        return texts[:limit], f"{carried_by}/{gate_texts.GATE_TEXTS_NAME} ({source})"
    log.warning("no --verify-data and %s carries no %s: the gate uses %d built-in support-inbox texts, which may "
                "not resemble this model's text; pass --verify-data with your evaluation texts",
                carried_by or "the model", gate_texts.GATE_TEXTS_NAME, len(FALLBACK_TEXTS))
    return list(FALLBACK_TEXTS), "built-in texts"


def load_reference_model(source: SourceModel | str | os.PathLike, max_length: int, attention: str):
    """The model as a user loads it (docscore's checkpoint loader, or ``transformers`` itself for a Hugging Face
    folder), in the mode the bundle was exported in: the PyTorch side of parity."""
    from docscore.export import graph

    if not isinstance(source, SourceModel):
        source = open_source(source)
    model = source.load_model()
    prepare_body(model, max_length)
    graph.set_attention(model, attention)
    return model


def run_gate(name: str, path: Path, reference, tol: Tolerance, spec, threads, device: str = "cpu",
          runtime: str = "onnxruntime", precision: str = "f32") -> dict:
    """Run variant ``name`` (``path``) on its runtime against the PyTorch ``reference`` and judge it by ``tol``."""
    from docscore.runtime.engine import open_engine

    t = time.perf_counter()
    engine = open_engine(path, runtime=runtime, precision=precision, device=device, threads=threads,
                         output_name=spec.output_name)
    report = check_variant(engine, reference, tol)
    report["device"] = device
    report["seconds"] = round(time.perf_counter() - t, 3)
    log.info("parity %s: %s -> %s", name, summarize(report), "pass" if report["passed"] else "FAIL")
    return report


def cuda_available() -> bool:
    """Whether this host's ONNX Runtime has the CUDA execution provider (fp16 is verified only there)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()
