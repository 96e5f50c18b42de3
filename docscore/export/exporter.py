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
                        "CUDA). Run `docscore verify --model BUNDLE --checkpoint CKPT` on a GPU host before using it.")


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

    The steps, each refusing before anything is written where it can: check the target and the host; read the
    gate's texts (and the calibration texts); open the model and settle its spec; then, in a temporary folder,
    write the tokenizer, export fp32, build the PyTorch reference, make and gate every requested variant, measure
    their speed, write the manifest and move the folder into place (see :class:`_Build`).

    Raises:
        ParityError: a variant failed its gate (or the graph's axes are not dynamic); nothing was written.
        ExportError: the exporter, optimizer or quantiser failed; nothing was written.
        CheckpointError, ConfigError, InputDataError: bad inputs, found before anything was written.

    Returns:
        the bundle directory.
    """
    from docscore.export import graph

    t_start = time.perf_counter()
    out = Path(options.output).absolute()
    _check_target(out, options.overwrite)
    if "bf16" in options.variants and not ov.native_bf16():
        raise ConfigError("--bf16 needs OpenVINO and a CPU with native bf16 (AVX512_BF16 or AMX) to verify the "
                          "variant; this host lacks one of them. Export without --bf16, or on such a host.")
    texts, source = gate_texts_for(options.verify_data, options.text_column, options.verify_rows,
                                   carried_by=Path(checkpoint_dir) if Path(checkpoint_dir).is_dir() else None)
    calibration = None
    if options.calibration_data is not None:  # read before any export work: a bad file fails fast
        calibration = gate_texts_for(options.calibration_data,
                                     options.calibration_text_column or options.text_column, options.calibration_rows)
    model_source = open_source(checkpoint_dir)  # refuses what it cannot export before anything is loaded or written
    model, hf_tokenizer = model_source.load_model(), model_source.load_tokenizer()
    spec = _settle_spec(model, model_source.spec, options.max_length)
    body_facts = prepare_body(model, spec.max_length)  # refuses bodies that cannot be exported faithfully
    attention_used = graph.set_attention(model, options.attention)
    external = options.external_data
    if external is None:
        external = graph.weights_bytes(model) > EXTERNAL_DATA_THRESHOLD

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build = _Build(tmp, spec, options, bool(external), texts, source)
        build.write_tokenizer(hf_tokenizer)
        exported = build.export_fp32(model)
        del model  # the reference is the model a user would load fresh, not the traced instance
        build.build_reference(model_source, hf_tokenizer)
        build.make_variants(exported, model_source, calibration)
        build.raise_if_failed(out)
        build.measure_speed()
        build.timings["total_s"] = round(time.perf_counter() - t_start, 3)
        write_manifest(tmp, build.manifest(model_source, exported, attention_used, body_facts))
        load_bundle(tmp)  # the bundle as a scorer will read it: hashes and all
        publishable(tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle written to %s in %.1fs", out, time.perf_counter() - t_start)
    return out


def _settle_spec(model, spec, max_length: int | None):
    """The spec to export: the model's own, or at ``--max-length`` (refused past the body's positions)."""
    if max_length is None:
        return spec
    from docscore.model import max_positions

    limit = max_positions(model.body.config)
    if limit and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the body's {limit} positions")
    if max_length > spec.max_length:
        log.warning("exporting at max_length %d, longer than the %d the model was trained with",
                    max_length, spec.max_length)
    return replace(spec, max_length=max_length)


class _Build:
    """One bundle being built in the temporary folder ``tmp``: its variants' manifest entries, the gate failures,
    the timings, and the steps :func:`export_bundle` runs in order."""

    def __init__(self, tmp: Path, spec, options: ExportOptions, external: bool, texts: list[str], source: str):
        self.tmp, self.spec, self.options, self.external = tmp, spec, options, external
        self.texts, self.source = texts, source
        self.scratch = tmp / ".work"
        self.timings: dict[str, float] = {}
        self.entries: dict[str, dict] = {}
        self.failed: dict[str, list[str]] = {}
        self.native_bf16 = ov.native_bf16()
        self.tok_info: dict = {}
        self.reference = None

    def write_tokenizer(self, hf_tokenizer) -> None:
        """The bundle's tokenizer and the gate's texts (verify re-runs the same gate by default); the gate then
        reads the tokenizer exactly as the scorer will: through ``Bundle.tokenizer()``."""
        from docscore.export.tokenizer import write_bundle_tokenizer

        self.tok_info = write_bundle_tokenizer(hf_tokenizer, self.tmp / TOKENIZER_NAME, self.spec.max_length)
        gate_texts.write(self.tmp, self.texts, self.source)
        self.bundle_tok = self.in_progress().tokenizer(truncate=True)

    def export_fp32(self, model) -> dict:
        from docscore.export import graph, variants

        t = time.perf_counter()
        self.fp32_path = self.tmp / variants.FILE_NAMES["fp32"]
        o = self.options
        exported = graph.export_fp32(model, self.spec, self.fp32_path, exporter=o.exporter, opset=o.resolved_opset,
                                     trace_shape=o.trace_shape, pad_id=self.tok_info["pad_id"],
                                     external=self.external, scratch=self.scratch)
        self.timings["export_s"] = round(time.perf_counter() - t, 3)
        return exported

    def build_reference(self, model_source, hf_tokenizer) -> None:
        """PyTorch's outputs on the gate's texts, from the model loaded fresh: tracing can change a body's state
        (BigBird switches its attention type in place on a short batch)."""
        t = time.perf_counter()
        spec, o = self.spec, self.options
        model = load_reference_model(model_source, spec.max_length, o.attention)
        self.reference = build_reference(model, hf_tokenizer, self.bundle_tok, self.texts,
                                         input_names=spec.input_names, pad_id=self.tok_info["pad_id"],
                                         max_length=spec.max_length, problem_type=spec.head.problem_type,
                                         batch_size=o.batch_size, trace_shape=o.trace_shape, data_source=self.source)
        self.timings["pytorch_reference_s"] = round(time.perf_counter() - t, 3)

    def in_progress(self) -> Bundle:
        return Bundle(self.tmp, {"spec": self.spec.to_dict(), "tokenizer": self.tok_info, "variants": self.entries})

    def gate(self, name: str, files: list[str], device: str = "cpu", **extra) -> None:
        """Judge variant ``name`` against the reference, then its invariance on the same session; record its entry."""
        from docscore.export import variants

        o = self.options
        rt = (variants.runtime_of(name, self.native_bf16) if device == "cpu"
              else {"runtime": "onnxruntime", "precision": "f16"})
        t = time.perf_counter()
        report = run_gate(name, self.tmp / files[0], self.reference, o.tolerance(name), self.spec, o.threads, device,
                          **rt)
        self.entries[name] = _variant_entry(name, files, self.tmp, **rt, verified=report["passed"], parity=report,
                                            **extra)
        if not report["passed"]:
            self.failed[name] = report["failures"]
        else:
            inv = check_invariance(self.in_progress(), name, self.texts, threads=o.threads,
                                   limit=o.invariance_rows, long_text=self.reference.long_text, device=device)
            self.entries[name]["invariance"] = inv
            if not inv["passed"]:
                if o.allow_batch_dependent:
                    self.entries[name]["batch_dependent"] = True
                    log.warning("variant %s is batch-dependent (%s); kept because of --allow-batch-dependent",
                                name, "; ".join(inv["failures"]))
                else:
                    self.failed[name] = inv["failures"] + [
                        "a batch-dependent variant is written only with --allow-batch-dependent"]
        self.timings[f"gate_{name}_s"] = round(time.perf_counter() - t, 3)

    def make_variants(self, exported: dict, model_source, calibration: tuple[list[str], str] | None) -> None:
        """fp32, then each requested variant, each gated; the first failure stops the rest."""
        from docscore.export import variants

        o, tmp = self.options, self.tmp
        self.gate("fp32", exported["files"], exporter=o.exporter)
        source_path = self.fp32_path
        if o.optimize and not self.failed:
            t = time.perf_counter()
            files, info = variants.optimize(self.fp32_path, tmp / variants.FILE_NAMES["optimized"],
                                            body_config=model_source.body_config, external=self.external,
                                            scratch=self.scratch)
            self.timings["optimize_s"] = round(time.perf_counter() - t, 3)
            self.gate("optimized", files, source="fp32", **info)
            source_path = tmp / files[0]
        if o.bf16 and not self.failed:
            self.gate("bf16", exported["files"][:1], source="fp32")
        if "int8" in o.quantize and not self.failed:
            self.make_int8(calibration)
        if "int8-dynamic" in o.quantize and not self.failed:
            t = time.perf_counter()
            files, info = variants.quantize_int8(source_path, tmp / variants.FILE_NAMES["int8-dynamic"],
                                                 external=self.external, scratch=self.scratch)
            self.timings["quantize_int8_dynamic_s"] = round(time.perf_counter() - t, 3)
            self.gate("int8-dynamic", files, source="optimized" if o.optimize else "fp32", **info)
        if o.fp16 and not self.failed:
            self.make_fp16(source_path)

    def make_int8(self, calibration: tuple[list[str], str] | None) -> None:
        """Static int8, calibrated on ``--calibration-data`` or else the gate's first texts, each at its own padded
        length (as the scorer pads it)."""
        from docscore.export import variants

        t = time.perf_counter()
        texts, source = calibration or (self.texts[:self.options.calibration_rows], self.source)
        spec, pad_id = self.spec, self.tok_info["pad_id"]
        feeds = [encodings_to_feed([e], spec.input_names, pad_id, int(padded_length(len(e.ids), spec.max_length)))
                 for e in self.bundle_tok.encode_batch(texts)]
        record = {"source": source, "rows": len(texts),
                  "sha256": sha256_file(source) if Path(source).is_file() else None}
        files, info = variants.quantize_int8_static(
            self.fp32_path, self.tmp / variants.FILE_NAMES["int8"], feeds, calibration=record,
            smooth_quant=self.options.smooth_quant,
            precision=variants.runtime_of("int8", self.native_bf16)["precision"])
        self.timings["quantize_int8_s"] = round(time.perf_counter() - t, 3)
        self.gate("int8", files, **info)

    def make_fp16(self, source_path: Path) -> None:
        """fp16, gated on CUDA where this host has it; otherwise written unverified, saying so."""
        from docscore.export import variants

        files, info = variants.convert_fp16(source_path, self.tmp / variants.FILE_NAMES["fp16"],
                                            external=self.external)
        if cuda_available():
            try:
                self.gate("fp16", files, device="cuda", **info)
                return
            except DeviceError as e:
                note = f"not verified: CUDA session failed: {e}"
        else:
            note = "not verified: " + FP16_UNVERIFIED_NOTE
            log.warning("fp16 variant written but NOT verified: %s", FP16_UNVERIFIED_NOTE)
        self.entries["fp16"] = _variant_entry("fp16", files, self.tmp, runtime="onnxruntime", precision="f16",
                                              verified=False, parity=None, note=note, **info)

    def raise_if_failed(self, out: Path) -> None:
        """All or nothing: a failed gate raises :class:`ParityError` naming the texts and the next step."""
        if not self.failed:
            return
        lines = [f"{name}: {msg}" for name, msgs in self.failed.items() for msg in msgs]
        passed = [n for n in self.entries if n not in self.failed]
        steps = []
        if "int8" in self.failed:
            steps.append("int8: calibrate it on a sample of the archives it will score (--calibration-data "
                         "FILE [--calibration-text-column COL]); the gate's texts alone may not resemble them")
        if passed:
            steps.append(f"export without the failing variant(s) to keep the others ({', '.join(passed)} passed)")
        steps.append("loosen a tolerance (--tolerance VARIANT.FIELD=VALUE) only if you accept the difference")
        err = ParityError(f"parity gate failed on {self.source}, no bundle written at {out}:\n  " + "\n  ".join(lines)
                          + "\nNext: " + "; or ".join(steps) + ".")
        err.report = {name: e["parity"] for name, e in self.entries.items()}
        raise err

    def measure_speed(self) -> None:
        """Each verified CPU variant's speed on this CPU, so ``score`` can pick the fastest without measuring."""
        cpu_variants = [n for n, e in self.entries.items() if e.get("verified") and n != "fp16"]
        t = time.perf_counter()
        signature = cpu_signature()
        for name, speed in measure(self.in_progress(), cpu_variants, self.options.threads).items():
            self.entries[name]["speed"] = {"cpu": signature, "seqs_per_s": round(speed, 2),
                                           "feed": [SPEED_BATCH[0], min(SPEED_BATCH[1], self.spec.max_length)]}
        self.timings["speed_s"] = round(time.perf_counter() - t, 3)

    def manifest(self, model_source, exported: dict, attention_used: str, body_facts: dict | None) -> dict:
        from docscore.export import graph

        o = self.options
        return {
            "spec": self.spec.to_dict(),
            "export": {
                "exporter": o.exporter,
                "attention": attention_used,
                "attention_requested": o.attention,
                **({"body_attention": body_facts} if body_facts else {}),
                "max_length_override": o.max_length,
                "opset": o.resolved_opset,
                "trace_shape": list(o.trace_shape),
                "dynamic_axes": {"batch": graph.BATCH, "sequence": graph.SEQUENCE},
                "external_data": self.external,
                "io": exported["io"],
                "versions": versions(),
                "body": {k: model_source.body_config.get(k) for k in BODY_FACTS
                         if model_source.body_config.get(k) is not None},
                "checkpoint": model_source.describe(),
                "gate": {"policy": GATE_POLICY, "data": self.source, "texts": len(self.texts)},
                "timings": self.timings,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            "tokenizer": self.tok_info,
            "variants": self.entries,
        }
