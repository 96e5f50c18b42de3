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
      },
      "manifest_sha256": "<sha256>"         # of the canonical JSON of everything above (see manifest_digest)
    }

The manifest's own digest makes an edit of ``docscore.json`` (labels swapped, max_length changed) visible: every
reader refuses a manifest whose content no longer matches it. It is not a signature: whoever can write the file
can recompute it. It catches accidental and unseen edits, and makes a deliberate one explicit
(``docscore verify --rehash``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import BundleError
from docscore.spec import ModelSpec

log = logging.getLogger(__name__)

MANIFEST_NAME = "docscore.json"
TOKENIZER_NAME = "tokenizer.json"
BUNDLE_FORMAT = "docscore-bundle/1"
VARIANT_ORDER = ("fp32", "optimized", "int8", "fp16")
DIGEST_KEY = "manifest_sha256"
REHASH_HINT = "re-export the bundle, or run `docscore verify BUNDLE --rehash` if the edit was intended"


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
    uri: str | None = None  # where it was loaded from, when not a local directory (``path`` is then a local copy)

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


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces, UTF-8), its own digest left out."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_json(bundle_dir: Path, manifest: dict) -> None:
    from docscore.storage import write_bytes

    write_bytes(None, Path(bundle_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


def write_manifest(bundle_dir: str | os.PathLike, manifest: dict) -> dict:
    """Hash every file in ``bundle_dir`` into ``manifest['files']``, seal it with its own digest and write
    ``docscore.json``."""
    bundle_dir = Path(bundle_dir)
    files = {}
    for p in sorted(bundle_dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            files[p.relative_to(bundle_dir).as_posix()] = sha256_file(p)
    manifest = {"format": BUNDLE_FORMAT, **{k: v for k, v in manifest.items() if k != DIGEST_KEY}, "files": files}
    manifest = json.loads(json.dumps(manifest))  # seal exactly what readers will parse (tuples, int keys)
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    _write_json(bundle_dir, manifest)
    return manifest


def reseal_manifest(bundle_dir: str | os.PathLike) -> dict:
    """Record the current content of ``docscore.json`` as intended: recompute its digest (files untouched).

    The caller checks the bundle first (``docscore verify --rehash`` does): this only makes an edit explicit.
    """
    manifest = read_manifest(bundle_dir)
    old = manifest.get(DIGEST_KEY)
    manifest = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    _write_json(Path(bundle_dir), manifest)
    log.warning("%s/%s resealed: digest %s -> %s", bundle_dir, MANIFEST_NAME, old, manifest[DIGEST_KEY])
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


def check_digest(bundle_dir: str | os.PathLike, manifest: dict) -> str | None:
    """Why the manifest's own digest does not hold (``None`` when it does)."""
    recorded = manifest.get(DIGEST_KEY)
    if recorded is None:
        return (f"{MANIFEST_NAME} has no {DIGEST_KEY} (written before docscore sealed its manifests), so edits "
                f"to it cannot be detected; {REHASH_HINT}")
    if recorded != manifest_digest(manifest):
        return (f"{MANIFEST_NAME} was edited after export: its content no longer matches its {DIGEST_KEY} "
                f"(labels, max_length or another field changed); {REHASH_HINT}")
    return None


def verify_digest(bundle_dir: str | os.PathLike, manifest: dict, *, allow_unsealed: bool = False) -> None:
    """Refuse an edited manifest; an unsealed (pre-digest) one is refused too, or only warned about when
    ``allow_unsealed`` (scoring keeps old bundles working; ``verify`` does not)."""
    problem = check_digest(bundle_dir, manifest)
    if problem is None:
        return
    if allow_unsealed and DIGEST_KEY not in manifest:
        log.warning("bundle %s: %s", bundle_dir, problem)
        return
    raise BundleError(f"bundle {bundle_dir}: {problem}")


def check_files(bundle_dir: str | os.PathLike, manifest: dict) -> dict[str, str | None]:
    """Each file the manifest lists → ``None`` when its sha256 holds, else what is wrong with it."""
    bundle_dir = Path(bundle_dir)
    result: dict[str, str | None] = {}
    for rel, expected in manifest.get("files", {}).items():
        p = bundle_dir / rel
        if not p.is_file():
            result[rel] = f"{rel}: missing"
        elif sha256_file(p) != expected:
            result[rel] = f"{rel}: sha256 mismatch (file changed or truncated since export)"
        else:
            result[rel] = None
    return result


def verify_files(bundle_dir: str | os.PathLike, manifest: dict) -> None:
    """Refuse a bundle whose files are missing, truncated or changed since export."""
    problems = [p for p in check_files(bundle_dir, manifest).values() if p]
    if problems:
        raise BundleError(
            f"bundle {bundle_dir} failed its hash check: " + "; ".join(problems)
            + ". Re-export the bundle or restore the original files."
        )


def load_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True, allow_unsealed: bool = True) -> Bundle:
    """Read a bundle's manifest and (by default) check it against its own digest and every file against its
    recorded sha256.

    Args:
        verify: check the digest and the files (``False`` only for callers that check them themselves).
        allow_unsealed: accept, with a warning, a manifest written before manifests carried a digest.
    """
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_digest(bundle_dir, manifest, allow_unsealed=allow_unsealed)
        verify_files(bundle_dir, manifest)
    return Bundle(Path(bundle_dir), manifest)


def fetch_bundle(uri: str | os.PathLike, endpoint: str | None = None, refresh: bool = False) -> Path:
    """A local directory holding the bundle at ``uri``: the directory itself for a local path, else a copy in
    the local cache (:func:`docscore.files.cache_root`, under ``bundles/<sha256 of docscore.json>``).

    Nothing is checked here (:func:`load_bundle` and ``docscore verify`` do that on the copy).

    Args:
        endpoint: an S3-compatible endpoint for ``s3://`` URIs that name none.
        refresh: copy again even when the cache holds this manifest's bundle.
    """
    from docscore import storage

    if not storage.has_scheme(uri):
        return Path(uri)
    loc = storage.resolve(uri, endpoint)
    if loc.is_local:
        return Path(loc.path)
    try:
        raw = storage.read_bytes(loc.fs, loc.join(MANIFEST_NAME))
    except OSError as e:
        raise BundleError(f"cannot read the bundle {loc.uri}: {storage.explain(e)}") from e
    if raw is None:
        raise BundleError(f"{loc.uri} is not a docscore bundle: {MANIFEST_NAME} is missing")
    try:
        files = list(json.loads(raw).get("files", {}))
    except (ValueError, AttributeError) as e:
        raise BundleError(f"cannot read {loc.uri}/{MANIFEST_NAME}: {e}") from e
    from docscore.files import cache_root

    cache = cache_root() / "bundles"
    local = cache / hashlib.sha256(raw).hexdigest()
    if (local / MANIFEST_NAME).is_file() and not refresh:
        return local
    import shutil

    tmp = cache / f".{local.name}.{os.getpid()}.tmp"
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                with loc.fs.open_input_stream(loc.join(rel)) as src, open(tmp / rel, "wb") as dst:
                    while block := src.read(1 << 22):
                        dst.write(block)
            except FileNotFoundError:
                log.warning("bundle %s: %s is missing", loc.uri, rel)  # reported by the hash check
        (tmp / MANIFEST_NAME).write_bytes(raw)
        shutil.rmtree(local, ignore_errors=True)
        os.replace(tmp, local)
    except OSError as e:
        if not (local / MANIFEST_NAME).is_file():  # another process may have finished the same copy
            raise BundleError(f"cannot copy the bundle {loc.uri}: {storage.explain(e)}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local


def publish_bundle(bundle_dir: str | os.PathLike, uri: str, endpoint: str | None = None) -> str:
    """Upload a finished local bundle to ``uri`` (``s3://models/bundle``, ...) so that no reader ever takes a half
    bundle for a whole one.

    An object store has no directory rename, so the order does it: the old ``docscore.json`` (if any) is removed
    first (a reader then finds no bundle, rather than an old manifest over new files), every other file is uploaded
    (each one atomic: a PUT or completed multipart upload, its size checked), ``docscore.json`` last, and then the
    old bundle's files that the new one does not list are removed. Readers check every file against the manifest
    (:func:`load_bundle_uri`, ``docscore verify``) anyway.

    Returns:
        The URI written, as shown in messages (never with credentials).
    """
    from docscore import storage

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    loc = storage.resolve(uri, endpoint)
    try:
        bucket = storage.missing_bucket(loc)
        if bucket:
            raise BundleError(f"cannot write the bundle {loc.uri}: the bucket {bucket} does not exist (docscore "
                              "never creates buckets)")
        old = storage.read_bytes(loc.fs, loc.join(MANIFEST_NAME))
        storage.delete(loc.fs, loc.join(MANIFEST_NAME))
        for rel in sorted(manifest["files"]):
            storage.put_file(str(bundle_dir / rel), loc.fs, loc.join(rel))
        storage.put_file(str(bundle_dir / MANIFEST_NAME), loc.fs, loc.join(MANIFEST_NAME))
        if old is not None:
            for rel in set(json.loads(old).get("files", {})) - set(manifest["files"]):
                storage.delete(loc.fs, loc.join(rel))
    except OSError as e:
        raise BundleError(f"cannot write the bundle {loc.uri}: {storage.explain(e)}; nothing a reader accepts "
                          "was left there, rerun the export") from e
    log.info("bundle uploaded to %s", loc.uri)
    return loc.uri


def load_bundle_uri(uri: str | os.PathLike, endpoint: str | None = None) -> Bundle:
    """:func:`load_bundle` for a local directory or a URI (``s3://models/bundle``, ``gs://...``).

    A remote bundle is copied once into a local cache (:func:`fetch_bundle`), then hash-checked there like any
    local bundle: runtimes load local files, and a tampered or truncated copy is refused. A cached copy that fails
    its check is copied again once (the store may have been fixed since).
    """
    from docscore import storage

    local = fetch_bundle(uri, endpoint)
    if not storage.has_scheme(uri) or storage.resolve(uri, endpoint).is_local:
        return load_bundle(local)
    try:
        bundle = load_bundle(local)
    except BundleError:
        bundle = load_bundle(fetch_bundle(uri, endpoint, refresh=True))
    return Bundle(bundle.path, bundle.manifest, uri=storage.resolve(uri, endpoint).uri)
