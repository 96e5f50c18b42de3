"""``verify``: re-check a bundle before deploying it — manifest digest, file hashes, the checkpoint's spec, parity.

Every check is recorded, not only the first failure: the report feeds the CLI, ``--json`` and the JUnit XML
report (:mod:`docscore.export.junit`), where each variant gets one test case per check (``hashes``, ``parity``,
``invariance``) and the bundle itself one per bundle-wide check (``manifest``, ``files``, ``checkpoint_spec``).

A check's ``status`` is ``passed``, ``failed`` or ``skipped``; ``source`` says whether it was re-run here
(``rechecked``) or read from the manifest (``recorded at export``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from docscore.bundle import DIGEST_KEY, TOKENIZER_NAME, Bundle, check_digest, check_files, read_manifest, reseal_manifest
from docscore.files import sha256_file
from docscore.errors import BundleError, ParityError
from docscore.export.options import DEFAULT_TOLERANCES, Tolerance
from docscore.spec import spec_differences

log = logging.getLogger(__name__)

VARIANT_CHECKS = ("hashes", "parity", "invariance")
BUNDLE_CHECKS = ("manifest", "files", "checkpoint_spec")


def _check(status: str, message: str = "", source: str = "rechecked", seconds: float = 0.0, **extra) -> dict:
    return {"status": status, "message": message, "source": source, "seconds": round(seconds, 3), **extra}


def _variant_files(entry: dict) -> list[str]:
    return [entry["file"], *entry.get("external_data", []), TOKENIZER_NAME]


def _hashes_check(entry: dict, files: dict, seconds: float) -> dict:
    problems = [files[f] if f in files else f"{f}: not listed in the manifest's files (not covered by a hash)"
                for f in _variant_files(entry) if files.get(f) is not None or f not in files]
    if problems:
        return _check("failed", "; ".join(problems), seconds=seconds)
    return _check("passed", f"{len(_variant_files(entry))} files match their sha256", seconds=seconds)


def _recorded(entry: dict, key: str) -> dict:
    """A check read from the manifest, for a variant this run did not re-check."""
    rec = entry.get(key)
    if key == "invariance" and entry.get("batch_dependent"):
        return _check("skipped", "batch-dependent: kept with --allow-batch-dependent, never a default",
                      source="manifest")
    if not rec:
        what = "no invariance report in the manifest" if key == "invariance" else (
            "not verified at export" + (f": {entry['note']}" if entry.get("note") else ""))
        return _check("skipped", what, source="manifest")
    if rec.get("passed"):
        return _check("passed", "recorded at export (not re-run here)", source="recorded at export")
    return _check("failed", "recorded at export: " + ("; ".join(rec.get("failures", [])) or "failed"),
                  source="recorded at export")


def verify_bundle(bundle_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  data: str | os.PathLike | None = None, *, text_column: str = "text", verify_rows: int = 300,
                  batch_size: int = 16, threads: int | None = None, rehash: bool = False,
                  device: str = "cpu") -> dict:
    """Re-check a bundle: its manifest against its own digest, every file against its sha256 and, given the
    checkpoint, the spec (labels, problem type, pooling, max_length, input names) and parity of each variant.

    Variants are re-judged with the tolerances recorded in the manifest. An unverified fp16 variant is re-run
    only where CUDA is available; otherwise it stays unverified and is reported as such.

    Args:
        device: ``cpu`` (default) or ``cuda``: on ``cuda`` every ONNX Runtime variant (fp32, optimized, fp16) is
            re-judged and its invariance re-checked on the GPU session (TF32 off), as ``score --device cuda``
            runs it; OpenVINO variants stay on the CPU. ``cuda`` without a working CUDA provider is an error.
        rehash: accept the manifest's current content as intended — reseal it with a new digest — when every
            other check passes (an old bundle without a digest, or a deliberate edit). Not a signature: it makes
            the edit explicit.

    Raises:
        BundleError: the manifest was edited or has no digest, a file is missing or changed, or the checkpoint
            does not match the bundle (the report is on ``err.report``).
        ParityError: a variant no longer matches the checkpoint (the report is on ``err.report``).

    Returns:
        ``{"bundle", "checkpoint", "files_checked", "hashes", "checks": {...}, "variants": {name: {...,
        "checks": {...}}}, "passed"}``.
    """
    bundle_dir = Path(bundle_dir)
    report: dict = {"bundle": str(bundle_dir), "checkpoint": str(checkpoint) if checkpoint else None,
                    "files_checked": 0, "hashes": "not checked", "checks": {}, "variants": {}, "passed": False}
    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as e:
        report["checks"]["manifest"] = _check("failed", str(e))
        e.report = report
        raise
    checks = report["checks"]
    problem = check_digest(bundle_dir, manifest)
    if problem and rehash:
        checks["manifest"] = _check("passed", f"resealed on request (was: {problem})")
    else:
        checks["manifest"] = _check("failed" if problem else "passed", problem or f"matches its {DIGEST_KEY}")

    t = time.perf_counter()
    files = check_files(bundle_dir, manifest)
    hash_s = time.perf_counter() - t
    bad = [p for p in files.values() if p]
    checks["files"] = _check("failed" if bad else "passed", "; ".join(bad) or f"{len(files)} files match",
                             seconds=hash_s)
    report["files_checked"], report["hashes"] = len(files), "failed" if bad else "ok"
    bundle = Bundle(bundle_dir, manifest)
    for name, entry in bundle.variants.items():
        report["variants"][name] = {"verified_at_export": bool(entry.get("verified")), "rechecked": False,
                                    **({"note": entry["note"]} if entry.get("note") else {}),
                                    "checks": {"hashes": _hashes_check(entry, files, hash_s),
                                               "parity": _recorded(entry, "parity"),
                                               "invariance": _recorded(entry, "invariance")}}
    trusted = all(checks[c]["status"] == "passed" for c in ("manifest", "files"))
    if not trusted:  # results recorded in an edited manifest, or for changed files, no longer say anything
        for v in report["variants"].values():
            for name in ("parity", "invariance"):
                v["checks"][name] = _check("skipped", "not trusted: the bundle failed its manifest or hash check",
                                           source="skipped")
    if checkpoint is not None:
        _recheck(bundle, checkpoint, data, report, trusted, text_column=text_column, verify_rows=verify_rows,
                 batch_size=batch_size, threads=threads, device=device)
    return _conclude(bundle, report, rehash)


def _recheck(bundle: Bundle, checkpoint, data, report: dict, trusted: bool, **kw) -> None:
    """Compare the checkpoint's spec with the bundle's and, when both agree and the bundle is intact, re-run
    every variant's parity gate against the freshly loaded checkpoint."""
    from docscore.export.source import open_source

    source = open_source(checkpoint)  # a docscore checkpoint or a Hugging Face *ForSequenceClassification folder
    ckpt_spec = source.spec
    export = bundle.manifest.get("export", {})
    diffs = spec_differences(bundle.spec, ckpt_spec, max_length_override=export.get("max_length_override"))
    report["checks"]["checkpoint_spec"] = _check(
        "failed" if diffs else "passed",
        f"checkpoint {checkpoint} does not match bundle {bundle.path}: " + "; ".join(diffs) if diffs
        else "labels, problem type, pooling, max_length and input names agree")
    if diffs or not trusted:
        why = "the checkpoint's spec differs" if diffs else "the bundle failed its manifest or hash check"
        for v in report["variants"].values():
            v["checks"]["parity"] = _check("skipped", f"not re-run: {why}", source="skipped")
        return
    recorded = export.get("checkpoint", {}).get("weights_sha256")
    report["checkpoint_changed"] = bool(recorded and recorded != sha256_file(source.weights))
    if report["checkpoint_changed"]:
        log.warning("checkpoint weights differ from those the bundle was exported from; parity will tell")

    from docscore.export.gate import cuda_available, gate_texts_for, load_reference_model, run_gate
    from docscore.export.invariance import check_invariance
    from docscore.export.parity import build_reference, summarize

    spec = bundle.spec
    hf_tokenizer = source.load_tokenizer()
    model = load_reference_model(source, spec.max_length, export.get("attention_requested", "eager"))
    texts, data_source = gate_texts_for(Path(data) if data else None, kw["text_column"], kw["verify_rows"],
                                carried_by=bundle.path)
    reference = build_reference(model, hf_tokenizer, bundle.tokenizer(truncate=True), texts,
                                input_names=spec.input_names, pad_id=bundle.pad_id, max_length=spec.max_length,
                                problem_type=spec.head.problem_type, batch_size=kw["batch_size"],
                                trace_shape=tuple(export.get("trace_shape", (2, 13))), data_source=data_source)
    report["data_source"] = data_source
    for name, entry in bundle.variants.items():
        v = report["variants"][name]
        recorded_tol = (entry.get("parity") or {}).get("tolerance")
        tol = Tolerance(**recorded_tol) if recorded_tol else DEFAULT_TOLERANCES.get(name, DEFAULT_TOLERANCES["fp32"])
        runtime = entry.get("runtime", "onnxruntime")
        device = "cuda" if entry.get("dtype") == "float16" or (kw["device"] == "cuda" and runtime == "onnxruntime") \
            else "cpu"
        if device == "cuda" and kw["device"] != "cuda" and not cuda_available():
            v["note"] = "not re-checked: no CUDA execution provider here"
            v["checks"]["parity"] = _check("skipped", v["note"], source="skipped")
            continue
        r = run_gate(name, bundle.variant_path(name), reference, tol, spec, kw["threads"], device,
                     runtime=runtime, precision=entry.get("precision", "f32"))
        v.update(rechecked=True, parity=r)
        v["checks"]["parity"] = _check("passed" if r["passed"] else "failed", "; ".join(r["failures"]) or summarize(r),
                                       seconds=r.get("seconds", 0.0))
        # invariance on the session parity ran on: every CPU variant, and on CUDA only when --device cuda asked
        if (device == "cpu" or kw["device"] == "cuda") and not entry.get("batch_dependent"):
            t = time.perf_counter()
            inv = check_invariance(bundle, name, texts, threads=kw["threads"], long_text=reference.long_text,
                                   device=device)
            v["invariance"] = inv
            v["checks"]["invariance"] = _check(
                "passed" if inv["passed"] else "failed",
                "; ".join(inv["failures"]) or ("bit-identical" if inv["bit_identical"] else
                                               f"max |Δscore| {inv['max_abs_score_diff']:.2e}, no label change"),
                seconds=time.perf_counter() - t)


def _conclude(bundle: Bundle, report: dict, rehash: bool) -> dict:
    """Set ``passed``, reseal on request, and raise the error that matches the first kind of failure."""
    bundle_fails = [c["message"] for c in report["checks"].values() if c["status"] == "failed"]
    bundle_fails += [f"{name}: {v['checks']['hashes']['message']}" for name, v in report["variants"].items()
                     if v["checks"]["hashes"]["status"] == "failed" and report["checks"]["files"]["status"] != "failed"]
    gate_fails = [f"{name}: {check}: {v['checks'][check]['message']}" for name, v in report["variants"].items()
                  for check in ("parity", "invariance") if v["checks"][check]["status"] == "failed"]
    report["passed"] = not bundle_fails and not gate_fails
    if bundle_fails:
        err = BundleError(f"bundle {bundle.path} failed verification: " + "; ".join(bundle_fails)
                          + ("" if "Re-export" in " ".join(bundle_fails) else
                             ". Re-export the bundle or restore the original files."))
        err.report = report
        raise err
    if gate_fails:
        if not report["checkpoint"]:
            head = f"bundle {bundle.path} records failed checks"
        elif report.get("checkpoint_changed"):
            head = (f"bundle {bundle.path} no longer matches checkpoint {report['checkpoint']}: its weights changed "
                    "since export; re-export the bundle")
        else:  # nothing changed: these texts are harder than the export's
            head = (f"bundle {bundle.path} and checkpoint {report['checkpoint']} are unchanged since export, but the "
                    f"gate fails on {report.get('data_source') or 'these texts'}")
        err = ParityError(head + ":\n  " + "\n  ".join(gate_fails))
        err.report = report
        raise err
    if rehash:
        reseal_manifest(bundle.path)
        report["resealed"] = True
    return report
