"""Variants derived from the fp32 graph, each gated by :mod:`docscore.export.parity` like fp32:

- ``optimized``: ONNX Runtime transformer fusions (ONNX Runtime).
- ``bf16``: the fp32 ``model.onnx`` itself, run by OpenVINO at bf16 inference precision (no file of its own).
- ``int8``: static int8 by NNCF post-training quantisation, calibrated on the gate's texts; OpenVINO IR, every
  op that is not quantised runs in bf16 where the CPU has it. Activation scales are fixed at export, so a row's
  scores never depend on the rows it is batched with.
- ``int8-dynamic``: ONNX Runtime's dynamic quantisation. Its activation scale is the min/max of the whole input
  tensor (``DynamicQuantizeLinear``), companions and padding included, so it is batch-dependent: the gate
  refuses it unless the export asks for it with ``allow_batch_dependent``.
- ``fp16``: half precision for CUDA (ONNX Runtime).

Which runtime and precision run a variant is recorded in its manifest entry (``runtime``, ``precision``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

import onnx

from docscore.errors import ExportError
from docscore.export.graph import save_model

log = logging.getLogger(__name__)

FILE_NAMES = {"fp32": "model.onnx", "optimized": "model.optimized.onnx", "bf16": "model.onnx",
              "int8": "model.int8.xml", "int8-dynamic": "model.int8-dynamic.onnx", "fp16": "model.fp16.onnx"}
DTYPES = {"fp32": "float32", "optimized": "float32", "bf16": "bfloat16", "int8": "int8", "int8-dynamic": "int8",
          "fp16": "float16"}
RUNTIMES = {"fp32": ("onnxruntime", "f32"), "optimized": ("onnxruntime", "f32"), "bf16": ("openvino", "bf16"),
            "int8": ("openvino", "bf16"), "int8-dynamic": ("onnxruntime", "f32"), "fp16": ("onnxruntime", "f16")}


def runtime_of(name: str, native_bf16: bool) -> dict:
    """``{"runtime", "precision"}`` of a variant; OpenVINO int8 keeps its non-quantised ops in fp32 where the
    exporting CPU has no native bf16 (the manifest records what the gate verified)."""
    runtime, precision = RUNTIMES[name]
    if name == "int8" and not native_bf16:
        precision = "f32"
    return {"runtime": runtime, "precision": precision}


def body_dims(body_config: dict) -> tuple[int, int]:
    """(num_heads, hidden_size) of a body config dict; DistilBERT names them n_heads / dim."""
    heads = body_config.get("num_attention_heads", body_config.get("n_heads", 0))
    hidden = body_config.get("hidden_size", body_config.get("dim", 0))
    return int(heads or 0), int(hidden or 0)


@contextlib.contextmanager
def _quiet_root_logging(origin: str):
    """ONNX Runtime's quantiser logs chatter (INFO per tensor, a pre-processing hint) on the *root* logger; keep
    it at DEBUG on ours instead, so the CLI shows only what matters."""

    def divert(record: logging.LogRecord) -> bool:
        if origin in record.pathname.replace("\\", "/") and record.levelno < logging.ERROR:
            log.debug("onnxruntime: %s", record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(divert)
    try:
        yield
    finally:
        root.removeFilter(divert)


def _repack(src: Path, dst: Path, external: bool) -> list[str]:
    """Load a graph written by a tool (with whatever external-data naming it chose) and save it the bundle way."""
    model = onnx.load(str(src), load_external_data=True)
    return save_model(model, dst, external)


def optimize(src: Path, dst: Path, *, body_config: dict, external: bool, scratch: Path) -> tuple[list[str], dict]:
    """ONNX Runtime's transformer optimizer (offline, CPU, portable: ``opt_level`` 1, Python fusions).

    Returns:
        ``(files, info)`` with ``info["fusions"]``: fused operator → count, only those found.
    """
    from onnxruntime.transformers import optimizer

    heads, hidden = body_dims(body_config)
    try:
        opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden)
    except Exception as e:
        raise ExportError(f"the ONNX Runtime transformer optimizer failed on {src.name}: {e}. "
                          "Export without --optimize, or try --exporter legacy.") from e
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.topological_sort()
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / "optimized.onnx"
    opt.save_model_to_file(str(tmp), use_external_data_format=external)
    files = _repack(tmp, dst, external)
    shutil.rmtree(scratch)
    log.info("optimizer fusions: %s", stats or "none")
    return files, {"fusions": stats, "optimizer": {"model_type": "bert", "num_heads": heads, "hidden_size": hidden}}


NNCF_SMOOTH_QUANT_DEFAULT = 0.95  # NNCF's SmoothQuant alpha for MatMuls of transformer models


def _logits_on(compiled, feeds: list[dict]):
    """Logits of every feed (one text each), stacked."""
    import numpy as np

    names = {p.get_any_name() for p in compiled.inputs}
    request = compiled.create_infer_request()
    out = [np.array(request.infer({k: v for k, v in f.items() if k in names})[compiled.output(0)], dtype=np.float64)
           for f in feeds]
    return np.concatenate(out)


def quantize_int8_static(src: Path, dst: Path, feeds: list[dict], *, calibration: dict,
                         smooth_quant: str = "auto", precision: str = "f32",
                         preset: str = "performance") -> tuple[list[str], dict]:
    """Static int8 by NNCF post-training quantisation of the fp32 graph, written as OpenVINO IR (``dst`` .xml and
    its .bin). Weights per channel, activations per tensor with scales fixed from ``feeds``.

    Args:
        feeds: calibration inputs, one text per feed at its own padded length (never batched with others).
        calibration: what the feeds came from (source, file sha256, rows), recorded in the manifest.
        smooth_quant: ``auto``: quantise with SmoothQuant off and at NNCF's default alpha and keep the one whose
            logits on ``feeds`` are closer to fp32 (mean |Δlogit|, run at ``precision``), ``off``, or an alpha.
            Neither is always better: on the MiniLM demo model scoring 600 long documents, NNCF's default
            SmoothQuant calibrated on short support-inbox texts gave 8 label flips and max |Δscore| 0.15 against
            fp32 (off: 3 flips, 0.045); calibrated on other long documents it was the better one (0.028 vs 0.047).
        precision: OpenVINO inference precision of the non-quantised ops when the variant is scored.
        preset: NNCF preset: ``performance`` (symmetric activations) or ``mixed`` (asymmetric activations).
    """
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's usage telemetry off (it is sent unless this or pytest is set)
    try:
        import nncf
        import numpy as np
        import openvino as ov
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           AdvancedSmoothQuantParameters)
    except ImportError as e:
        raise ExportError("--quantize int8 needs OpenVINO and NNCF: pip install 'docscore[train]' "
                          f"(they are in the train extra) — {e}") from e
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    if smooth_quant == "auto":
        alphas = {"off": -1.0, repr(NNCF_SMOOTH_QUANT_DEFAULT): NNCF_SMOOTH_QUANT_DEFAULT}
    elif smooth_quant == "off":
        alphas = {"off": -1.0}
    else:
        alphas = {smooth_quant: float(smooth_quant)}
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF logs each algorithm step at INFO
    core = ov.Core()
    candidates: dict[str, dict] = {}
    try:
        # NNCF draws rich progress bars on stdout; the CLI has its own progress and the library must not print
        with _quiet_root_logging("nncf"), contextlib.redirect_stdout(io.StringIO()):
            reference = None
            if len(alphas) > 1:
                reference = _logits_on(core.compile_model(str(src), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                                       feeds)
            for label, alpha in alphas.items():
                advanced = AdvancedQuantizationParameters(
                    smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=alpha))
                quantized = nncf.quantize(core.read_model(str(src)), nncf.Dataset(feeds), preset=presets[preset],
                                          model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
                                          advanced_parameters=advanced)
                entry: dict = {"model": quantized}
                if reference is not None:
                    got = _logits_on(core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": precision}),
                                     feeds)
                    diff = np.abs(got - reference)
                    entry["calibration_error"] = {"mean_abs_logit_diff": float(diff.mean()),
                                                  "max_abs_logit_diff": float(diff.max())}
                candidates[label] = entry
            chosen = min(candidates, key=lambda k: candidates[k].get("calibration_error", {}).get(
                "mean_abs_logit_diff", 0.0))
            ov.save_model(candidates[chosen]["model"], str(dst), compress_to_fp16=False)  # fp16 storage moves scores
    except Exception as e:
        raise ExportError(f"static int8 quantisation (NNCF) of {src.name} failed: {e}") from e
    finally:
        nncf_log.setLevel(level)
    smooth = {"requested": smooth_quant, "alpha": None if chosen == "off" else float(chosen)}
    if len(candidates) > 1:
        smooth["candidates"] = {k: v["calibration_error"] for k, v in candidates.items()}
        log.info("int8 SmoothQuant: %s (mean |Δlogit| vs fp32 on the calibration texts: %s)", chosen,
                 ", ".join(f"{k} {v['calibration_error']['mean_abs_logit_diff']:.4f}" for k, v in candidates.items()))
    bin_file = dst.with_suffix(".bin")
    return [dst.name, bin_file.name], {"quantization": {
        "mode": "static", "tool": f"nncf {nncf.__version__}", "preset": preset, "model_type": "transformer",
        "weights": "int8 per channel (symmetric)", "activations": "int8 per tensor, fixed scales",
        "smooth_quant": smooth, "calibration": calibration, "source": src.name}}


def quantize_int8(src: Path, dst: Path, *, external: bool, scratch: Path) -> tuple[list[str], dict]:
    """Dynamic int8 quantisation (the ``int8-dynamic`` variant; batch-dependent), per channel (per-tensor dropped MiniLM's min embedding cosine to 0.69, per
    channel kept 0.94 — issue 3)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / "int8.onnx"
    # DefaultTensorType: on the fused legacy graph, quantize_dynamic cannot infer the type of some MatMul outputs
    # ("Unable to find data type for weight_name=...MatMul_output_0") without a default.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    try:
        with _quiet_root_logging("onnxruntime/quantization"):
            quantize_dynamic(str(src), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                             use_external_data_format=external, extra_options=extra)
    except Exception as e:
        raise ExportError(f"int8 quantisation of {src.name} failed: {e}") from e
    files = _repack(tmp, dst, external)
    shutil.rmtree(scratch)
    return files, {"quantization": {"mode": "dynamic", "weight_type": "QInt8", "per_channel": True,
                                    "activations": "uint8 (dynamic)", "source": src.name}}


def convert_fp16(src: Path, dst: Path, *, external: bool) -> tuple[list[str], dict]:
    """Half-precision weights and compute, float32 inputs/outputs kept (``keep_io_types``) so feeds don't change."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        model = OnnxModel(onnx.load(str(src), load_external_data=True))
        model.convert_float_to_float16(keep_io_types=True)
    except Exception as e:
        raise ExportError(f"fp16 conversion of {src.name} failed: {e}") from e
    files = save_model(model.model, dst, external)
    return files, {"conversion": {"keep_io_types": True, "source": src.name}}
