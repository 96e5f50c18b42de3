"""Checkpoint → gated bundle, and re-verification of a bundle.

The bundle is built in a temporary sibling directory and renamed into place only after every requested variant
has passed its gate. Policy: **all or nothing** — if any requested variant (fp32, optimized, int8; fp16 where it
can be verified) fails, the export exits non-zero and no bundle is written, rather than silently shipping fewer
variants than were asked for. Rerun without the failing flag, or loosen its tolerance explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from docscore.bundle import MANIFEST_NAME, TOKENIZER_NAME, Bundle, load_bundle, write_manifest
from docscore.files import sha256_file
from docscore.errors import ConfigError, DeviceError, ParityError
from docscore.export.bodies import prepare_body
from docscore.export.options import EXTERNAL_DATA_THRESHOLD, ExportOptions
from docscore.files import publishable
from docscore import gate_texts
from docscore.runtime import ov
from docscore.runtime.choose import SPEED_BATCH, cpu_signature, measure
from docscore.batch.plan import padded_length
from docscore.export.invariance import check_invariance
from docscore.export.gate import cuda_available, gate_texts_for, load_reference_model, run_gate
from docscore.export.parity import build_reference
from docscore.export.source import open_source
from docscore.runtime.ort import encodings_to_feed

log = logging.getLogger(__name__)

GATE_POLICY = "all-or-nothing: every requested variant passed its gate, or no bundle was written"
FP16_UNVERIFIED_NOTE = ("no CUDA execution provider on the exporting machine (fp16 is meant for "
                        "CUDA). Run `docscore verify BUNDLE --checkpoint CKPT` on a GPU host before using it.")


def versions() -> dict:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    from docscore import __version__

    return {"docscore": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an old bundle, and that only with ``overwrite``; never a bundle folder that
    holds files its manifest does not list (someone else's files, which a replacement would delete)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir() or not (out / MANIFEST_NAME).is_file():
        raise ConfigError(f"{out} exists and is not a docscore bundle; refusing to replace it. Choose another "
                          "--output or remove it.")
    if not overwrite:
        raise ConfigError(f"{out} already holds a bundle; pass --overwrite to replace it, or choose another --output")
    log.warning("replacing the bundle at %s (--overwrite) once the new one has passed its gates", out)
    try:
        listed = set(json.loads((out / MANIFEST_NAME).read_text()).get("files", {})) | {MANIFEST_NAME}
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{out}/{MANIFEST_NAME} is unreadable ({e}); refusing to replace {out}") from e
    foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if (p.is_file() or p.is_symlink()) and p.relative_to(out).as_posix() not in listed)
    if foreign:
        more = f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else ""
        raise ConfigError(f"{out} holds files its bundle manifest does not list ({', '.join(foreign[:5])}{more}); "
                          "--overwrite would delete them: move them out, or choose another --output")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` (an old bundle is moved aside first, then removed)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Body sizes kept in the manifest for benchmarks' FLOP counts (the scorer does not need them).
BODY_FACTS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "dim",
              "n_layers", "n_heads", "hidden_dim")


def _variant_entry(name: str, files: list[str], bundle_dir: Path, **extra) -> dict:
    from docscore.export.variants import DTYPES

    # bf16 shares model.onnx with fp32: its size is that file's, not extra bytes in the bundle
    entry = {"file": files[0], "dtype": DTYPES[name], "size_bytes": sum((bundle_dir / f).stat().st_size for f in files)}
    if len(files) > 1:
        entry["external_data"] = files[1:]
    entry.update(extra)
    return entry


def export_bundle(checkpoint_dir: str | os.PathLike, options: ExportOptions) -> Path:
    """Export a checkpoint — or a Hugging Face ``*ForSequenceClassification`` folder, as ``transformers`` defines
    it (see :mod:`docscore.export.source`) — to a verified bundle at ``options.output``.

    Raises:
        ParityError: a variant failed its gate (or the graph's axes are not dynamic); nothing was written.
        ExportError: the exporter, optimizer or quantiser failed; nothing was written.
        CheckpointError, ConfigError, InputDataError: bad inputs, found before anything was written.

    Returns:
        the bundle directory.
    """
    from docscore.export import graph, variants
    from docscore.export.tokenizer import write_bundle_tokenizer

    t_start = time.perf_counter()
    out = Path(options.output).absolute()
    _check_target(out, options.overwrite)
    if "bf16" in options.variants and not ov.native_bf16():
        raise ConfigError("--bf16 needs OpenVINO and a CPU with native bf16 (AVX512_BF16 or AMX) to verify the "
                          "variant; this host lacks one of them. Export without --bf16, or on such a host.")
    texts, source = gate_texts_for(options.verify_data, options.text_column, options.verify_rows,
                           carried_by=Path(checkpoint_dir) if Path(checkpoint_dir).is_dir() else None)
    calibration_texts = calibration_source = None
    if options.calibration_data is not None:  # read before any export work: a bad file fails fast
        calibration_texts, calibration_source = gate_texts_for(
            options.calibration_data, options.calibration_text_column or options.text_column,
            options.calibration_rows)
    model_source = open_source(checkpoint_dir)  # refuses what it cannot export before anything is loaded or written
    model, hf_tokenizer, spec = model_source.load_model(), model_source.load_tokenizer(), model_source.spec
    if options.max_length is not None:
        from docscore.model import max_positions

        limit = max_positions(model.body.config)
        if limit and options.max_length > limit:
            raise ConfigError(f"max_length {options.max_length} exceeds the body's {limit} positions")
        if options.max_length > spec.max_length:
            log.warning("exporting at max_length %d, longer than the %d the model was trained with",
                        options.max_length, spec.max_length)
        spec = replace(spec, max_length=options.max_length)
    body_facts = prepare_body(model, spec.max_length)  # refuses bodies that cannot be exported faithfully
    attention_used = graph.set_attention(model, options.attention)
    external = options.external_data
    if external is None:
        external = graph.weights_bytes(model) > EXTERNAL_DATA_THRESHOLD
    opset = options.resolved_opset

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        scratch = tmp / ".work"
        timings: dict[str, float] = {}
        tok_info = write_bundle_tokenizer(hf_tokenizer, tmp / TOKENIZER_NAME, spec.max_length)
        gate_texts.write(tmp, texts, source)  # verify re-runs the same gate by default
        # The gate reads the tokenizer exactly as the scorer will: through Bundle.tokenizer().
        bundle_tok = Bundle(tmp, {"spec": spec.to_dict(), "tokenizer": tok_info}).tokenizer(truncate=True)

        t = time.perf_counter()
        fp32_path = tmp / variants.FILE_NAMES["fp32"]
        exported = graph.export_fp32(model, spec, fp32_path, exporter=options.exporter, opset=opset,
                                     trace_shape=options.trace_shape, pad_id=tok_info["pad_id"], external=external,
                                     scratch=scratch)
        timings["export_s"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        # The reference is the model a user would load fresh, not the traced instance: tracing can change a
        # body's state (BigBird switches its attention type in place on a short batch).
        del model
        model = load_reference_model(model_source, spec.max_length, options.attention)
        reference = build_reference(model, hf_tokenizer, bundle_tok, texts, input_names=spec.input_names,
                                    pad_id=tok_info["pad_id"], max_length=spec.max_length,
                                    problem_type=spec.head.problem_type, batch_size=options.batch_size,
                                    trace_shape=options.trace_shape, data_source=source)
        timings["pytorch_reference_s"] = round(time.perf_counter() - t, 3)

        entries: dict[str, dict] = {}
        failed: dict[str, list[str]] = {}
        native_bf16 = ov.native_bf16()

        def in_progress() -> Bundle:
            return Bundle(tmp, {"spec": spec.to_dict(), "tokenizer": tok_info, "variants": entries})

        def gate(name: str, files: list[str], device: str = "cpu", **extra) -> None:
            rt = variants.runtime_of(name, native_bf16) if device == "cpu" else {"runtime": "onnxruntime",
                                                                                 "precision": "f16"}
            t = time.perf_counter()
            report = run_gate(name, tmp / files[0], reference, options.tolerance(name), spec, options.threads, device,
                           **rt)
            entries[name] = _variant_entry(name, files, tmp, **rt, verified=report["passed"], parity=report,
                                           **extra)
            if not report["passed"]:
                failed[name] = report["failures"]
            elif device == "cpu":
                inv = check_invariance(in_progress(), name, texts, threads=options.threads,
                                       limit=options.invariance_rows, long_text=reference.long_text)
                entries[name]["invariance"] = inv
                if not inv["passed"]:
                    if options.allow_batch_dependent:
                        entries[name]["batch_dependent"] = True
                        log.warning("variant %s is batch-dependent (%s); kept because of --allow-batch-dependent",
                                    name, "; ".join(inv["failures"]))
                    else:
                        failed[name] = inv["failures"] + [
                            "a batch-dependent variant is written only with --allow-batch-dependent"]
            timings[f"gate_{name}_s"] = round(time.perf_counter() - t, 3)

        gate("fp32", exported["files"], exporter=options.exporter)
        source_path = fp32_path
        if options.optimize and not failed:
            t = time.perf_counter()
            files, info = variants.optimize(fp32_path, tmp / variants.FILE_NAMES["optimized"],
                                            body_config=model_source.body_config, external=external,
                                            scratch=scratch)
            timings["optimize_s"] = round(time.perf_counter() - t, 3)
            gate("optimized", files, source="fp32", **info)
            source_path = tmp / files[0]
        if options.bf16 and not failed:
            gate("bf16", exported["files"][:1], source="fp32")
        if "int8" in options.quantize and not failed:
            t = time.perf_counter()
            if calibration_texts is not None:
                calib_texts, calib_source = calibration_texts, calibration_source
            else:
                calib_texts, calib_source = texts[:options.calibration_rows], source
            feeds = [encodings_to_feed([e], spec.input_names, tok_info["pad_id"],
                                       int(padded_length(len(e.ids), spec.max_length)))
                     for e in bundle_tok.encode_batch(calib_texts)]
            calibration = {"source": calib_source, "rows": len(calib_texts),
                           "sha256": sha256_file(calib_source) if Path(calib_source).is_file() else None}
            files, info = variants.quantize_int8_static(
                fp32_path, tmp / variants.FILE_NAMES["int8"], feeds, calibration=calibration,
                smooth_quant=options.smooth_quant, precision=variants.runtime_of("int8", native_bf16)["precision"])
            timings["quantize_int8_s"] = round(time.perf_counter() - t, 3)
            gate("int8", files, **info)
        if "int8-dynamic" in options.quantize and not failed:
            t = time.perf_counter()
            files, info = variants.quantize_int8(source_path, tmp / variants.FILE_NAMES["int8-dynamic"],
                                                 external=external, scratch=scratch)
            timings["quantize_int8_dynamic_s"] = round(time.perf_counter() - t, 3)
            gate("int8-dynamic", files, source="optimized" if options.optimize else "fp32", **info)
        if options.fp16 and not failed:
            files, info = variants.convert_fp16(source_path, tmp / variants.FILE_NAMES["fp16"], external=external)
            if cuda_available():
                try:
                    gate("fp16", files, device="cuda", **info)
                except DeviceError as e:
                    entries["fp16"] = _variant_entry("fp16", files, tmp, runtime="onnxruntime", precision="f16",
                                                     verified=False, parity=None,
                                                     note=f"not verified: CUDA session failed: {e}", **info)
            else:
                entries["fp16"] = _variant_entry("fp16", files, tmp, runtime="onnxruntime", precision="f16",
                                                 verified=False, parity=None,
                                                 note="not verified: " + FP16_UNVERIFIED_NOTE, **info)
                log.warning("fp16 variant written but NOT verified: %s", FP16_UNVERIFIED_NOTE)
        if not failed:
            cpu_variants = [n for n, e in entries.items() if e.get("verified") and n != "fp16"]
            t = time.perf_counter()
            signature = cpu_signature()
            for name, speed in measure(in_progress(), cpu_variants, options.threads).items():
                entries[name]["speed"] = {"cpu": signature, "seqs_per_s": round(speed, 2),
                                          "feed": [SPEED_BATCH[0], min(SPEED_BATCH[1], spec.max_length)]}
            timings["speed_s"] = round(time.perf_counter() - t, 3)
        if failed:
            lines = [f"{name}: {msg}" for name, msgs in failed.items() for msg in msgs]
            passed = [n for n in entries if n not in failed]
            steps = []
            if "int8" in failed:
                steps.append("int8: calibrate it on a sample of the archives it will score (--calibration-data "
                             "FILE [--calibration-text-column COL]); the gate's texts alone may not resemble them")
            if passed:
                steps.append(f"export without the failing variant(s) to keep the others ({', '.join(passed)} "
                             "passed)")
            steps.append("loosen a tolerance (--tolerance VARIANT.FIELD=VALUE) only if you accept the difference")
            err = ParityError(f"parity gate failed on {source}, no bundle written at {out}:\n  " + "\n  ".join(lines)
                              + "\nNext: " + "; or ".join(steps) + ".")
            err.report = {name: e["parity"] for name, e in entries.items()}
            raise err
        timings["total_s"] = round(time.perf_counter() - t_start, 3)
        manifest = {
            "spec": spec.to_dict(),
            "export": {
                "exporter": options.exporter,
                "attention": attention_used,
                "attention_requested": options.attention,
                **({"body_attention": body_facts} if body_facts else {}),
                "max_length_override": options.max_length,
                "opset": opset,
                "trace_shape": list(options.trace_shape),
                "dynamic_axes": {"batch": graph.BATCH, "sequence": graph.SEQUENCE},
                "external_data": bool(external),
                "io": exported["io"],
                "versions": versions(),
                "body": {k: model_source.body_config.get(k) for k in BODY_FACTS
                         if model_source.body_config.get(k) is not None},
                "checkpoint": model_source.describe(),
                "gate": {"policy": GATE_POLICY, "data": source, "texts": len(texts)},
                "timings": timings,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            "tokenizer": tok_info,
            "variants": entries,
        }
        write_manifest(tmp, manifest)
        load_bundle(tmp)  # the bundle as a scorer will read it: hashes and all
        publishable(tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle written to %s in %.1fs", out, time.perf_counter() - t_start)
    return out

