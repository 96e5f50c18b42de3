"""The deployable bundle: ONNX variants + ``tokenizer.json`` + the ``docscore.json`` manifest.

Torch-free: this is what a scoring host reads. The exporter (``docscore.export``) writes bundles through
:func:`write_manifest`; everything else only reads them through :func:`load_bundle`.

Manifest layout (``docscore.json``)::

    {
      "format": "docscore-bundle/1",
      "spec": {...ModelSpec...},            # labels, problem type, pooling, max_length, input names
      "export": {"exporter": ..., "attention": ..., "opset": ..., "versions": {...}, ...},
      "files": {"model.onnx": "<sha256>", "tokenizer.json": "<sha256>", ...},
      "variants": {
        "fp32": {"file": "model.onnx", "dtype": "float32", "verified": true, "parity": {...}},
        "optimized": {...}, "int8": {...}, "fp16": {..., "verified": false, "note": "..."}
      }
    }
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import BundleError
from docscore.spec import ModelSpec

MANIFEST_NAME = "docscore.json"
TOKENIZER_NAME = "tokenizer.json"
BUNDLE_FORMAT = "docscore-bundle/1"
VARIANT_ORDER = ("fp32", "optimized", "int8", "fp16")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (bundles can hold multi-GiB external data)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, hash-checked bundle directory."""

    path: Path
    manifest: dict

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.manifest["spec"])

    @property
    def variants(self) -> dict[str, dict]:
        return self.manifest.get("variants", {})

    @property
    def sha256(self) -> str:
        """One fingerprint for the whole bundle: the hash of its manifest (which lists every file's hash)."""
        return sha256_file(self.path / MANIFEST_NAME)

    def default_variant(self, device: str = "cpu") -> str:
        """The variant ``score`` runs without ``--variant``: the fastest verified, batch-invariant one that this
        host can run, by measurement on this CPU (:mod:`docscore.batch.choose`)."""
        from docscore.batch.choose import choose_variant

        return choose_variant(self, device)

    def variant_path(self, name: str) -> Path:
        if name not in self.variants:
            raise BundleError(
                f"bundle {self.path} has no variant {name!r}; it holds: {', '.join(self.variants) or 'none'}"
            )
        return self.path / self.variants[name]["file"]

    def tokenizer(self, truncate: bool = True):
        """The bundle's tokenizer, set up as the model was trained and verified: truncation at ``max_length``
        (or none, for callers that window long documents themselves) and no padding (callers pad per batch).
        """
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / TOKENIZER_NAME))
        tok.no_padding()
        if truncate:
            tok.enable_truncation(self.spec.max_length)
        else:
            tok.no_truncation()
        return tok

    @property
    def pad_id(self) -> int:
        return int(self.manifest.get("tokenizer", {}).get("pad_id", 0))


def write_manifest(bundle_dir: str | os.PathLike, manifest: dict) -> dict:
    """Hash every file in ``bundle_dir`` into ``manifest['files']`` and write ``docscore.json``."""
    bundle_dir = Path(bundle_dir)
    files = {}
    for p in sorted(bundle_dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            files[p.relative_to(bundle_dir).as_posix()] = sha256_file(p)
    manifest = {"format": BUNDLE_FORMAT, **manifest, "files": files}
    tmp = bundle_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, bundle_dir / MANIFEST_NAME)
    return manifest


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist; run `docscore export-onnx` first")
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a docscore bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read {path}: {e}") from e
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unknown bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT}")
    return manifest


def verify_files(bundle_dir: str | os.PathLike, manifest: dict) -> None:
    """Refuse a bundle whose files are missing, truncated or changed since export."""
    bundle_dir = Path(bundle_dir)
    problems = []
    for rel, expected in manifest.get("files", {}).items():
        p = bundle_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != expected:
            problems.append(f"{rel}: sha256 mismatch (file changed or truncated since export)")
    if problems:
        raise BundleError(
            f"bundle {bundle_dir} failed its hash check: " + "; ".join(problems)
            + ". Re-export the bundle or restore the original files."
        )


def load_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read a bundle's manifest and (by default) check every file against its recorded sha256."""
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_files(bundle_dir, manifest)
    return Bundle(Path(bundle_dir), manifest)
