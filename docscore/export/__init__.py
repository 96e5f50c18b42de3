"""Checkpoint → ONNX bundle, behind a parity gate (torch, onnx and onnxruntime needed here, not for scoring).

Public API::

    from docscore.export import ExportOptions, export_bundle, verify_bundle
    export_bundle("checkpoint/", ExportOptions(output="bundle/", optimize=True, quantize="int8"))
    verify_bundle("bundle/", checkpoint="checkpoint/")

Modules: ``options`` (what to do, tolerances), ``graph`` (torch → ONNX, dynamic axes), ``tokenizer`` (the
bundle's ``tokenizer.json``), ``variants`` (optimized / int8 / fp16), ``parity`` (the gate), ``exporter``
(orchestration, atomic bundle write), ``verify`` (re-verification), ``junit`` (verify's CI report).
"""

from docscore.export.options import DEFAULT_TOLERANCES, ExportOptions, Tolerance

__all__ = ["DEFAULT_TOLERANCES", "ExportOptions", "Tolerance", "export_bundle", "verify_bundle"]


def export_bundle(checkpoint_dir, options: ExportOptions):
    """Export ``checkpoint_dir`` to a gated bundle; see :func:`docscore.export.exporter.export_bundle`."""
    from docscore.export.exporter import export_bundle as _export

    return _export(checkpoint_dir, options)


def verify_bundle(bundle_dir, checkpoint=None, data=None, **kwargs):
    """Re-check a bundle's hashes (and parity, given its checkpoint); see
    :func:`docscore.export.verify.verify_bundle`."""
    from docscore.export.verify import verify_bundle as _verify

    return _verify(bundle_dir, checkpoint, data, **kwargs)
