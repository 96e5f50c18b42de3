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

A bundle is untrusted input: every path its manifest names (``files``, each variant's ``file`` and
``external_data``, an OpenVINO IR's ``.bin``, ``tokenizer.json``) must be a plain relative POSIX path inside the
bundle folder, with no symlink leading out of it, and every file a variant or the tokenizer loads must be listed in
``files`` (so a hash covers it). :func:`check_manifest_paths` refuses anything else before any file is read,
fetched or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import BundleError
from docscore.files import sha256_file
from docscore.spec import ModelSpec

log = logging.getLogger(__name__)

MANIFEST_NAME = "docscore.json"
TOKENIZER_NAME = "tokenizer.json"
BUNDLE_FORMAT = "docscore-bundle/1"
VARIANT_ORDER = ("fp32", "optimized", "int8", "fp16")
DIGEST_KEY = "manifest_sha256"
REHASH_HINT = "re-export the bundle, or run `docscore verify --model BUNDLE --rehash` if the edit was intended"


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

    def variant_path(self, name: str) -> Path:
        if name not in self.variants:
            raise BundleError(
                f"bundle {self.path} has no variant {name!r}; it holds: {', '.join(self.variants) or 'none'}"
            )
        return bundle_file(self.path, self.variants[name].get("file"), f"variants.{_key(name)}.file")

    def tokenizer(self, truncate: bool = True):
        """The bundle's tokenizer, set up as the model was trained and verified: truncation at ``max_length``
        (or none, for callers that window long documents themselves) and no padding (callers pad per batch).
        """
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(bundle_file(self.path, TOKENIZER_NAME, "tokenizer")))
        tok.no_padding()
        if truncate:
            tok.enable_truncation(self.spec.max_length)
        else:
            tok.no_truncation()
        return tok

    @property
    def pad_id(self) -> int:
        return int(self.manifest.get("tokenizer", {}).get("pad_id", 0))


_DRIVE = re.compile(r"^[A-Za-z]:")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
PATH_HINT = "a bundle may name only plain relative paths inside its own folder; re-export it or fix its manifest"


def _key(name) -> str:
    """A manifest key as shown in a message: as it is when plain, quoted (escapes and all) otherwise."""
    return name if isinstance(name, str) and _SAFE_KEY.match(name) else repr(name)


def path_problem(rel) -> str | None:
    """Why ``rel`` is not a plain relative POSIX path (``None`` when it is): the lexical rule, no disk access."""
    if not isinstance(rel, str):
        return "is not a string"
    if not rel:
        return "is empty"
    if "\x00" in rel:
        return "contains a NUL character"
    if "\\" in rel:
        return "contains a backslash (bundle paths are '/'-separated)"
    if rel.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(rel):
        return "starts with a drive letter"
    parts = rel.split("/")
    if ".." in parts:
        return "has a '..' component (it would leave the bundle)"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    return None


UNLISTED = "is not listed in the manifest's files (no hash would cover it)"
UNLISTED_HINT = "every file a variant or the tokenizer loads must be listed there; re-export the bundle"


def _refuse(where, field: str, rel, problem: str) -> BundleError:
    hint = UNLISTED_HINT if problem == UNLISTED else PATH_HINT
    return BundleError(f"bundle {where}: {MANIFEST_NAME} {field} {rel!r} {problem}; {hint}")


def _escape(root: Path, rel: str) -> str | None:
    """Why ``root/rel`` leads out of ``root`` on this disk (a symlink anywhere along it), else ``None``."""
    try:
        real_root = root.resolve()
        target = (real_root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        return f"cannot be resolved ({e})"
    if target != real_root and real_root not in target.parents:
        return f"leads out of the bundle through a symlink (to {target})"
    return None


def bundle_file(root: str | os.PathLike, rel, field: str = "file") -> Path:
    """``root/rel`` for a path a manifest names, refused (:class:`BundleError`) unless it is a plain relative path
    that stays inside ``root`` on this disk."""
    root = Path(root)
    problem = path_problem(rel) or _escape(root, rel)
    if problem:
        raise _refuse(root, field, rel, problem)
    return root / rel


def manifest_paths(manifest: dict) -> list[tuple[str, object, bool]]:
    """Every file reference the manifest holds: ``(where in the manifest, path, must be listed in files)``.

    Raises:
        BundleError: ``files``, ``variants`` or an entry is not shaped as a manifest's are (no path to check).
    """
    files = manifest.get("files", {})
    variants = manifest.get("variants", {})
    tokenizer = manifest.get("tokenizer", {})
    for field, value in (("files", files), ("variants", variants), ("tokenizer", tokenizer)):
        if not isinstance(value, dict):
            raise BundleError(f"{MANIFEST_NAME}: {field} is not an object; {PATH_HINT}")
    refs: list[tuple[str, object, bool]] = [("files entry", rel, False) for rel in files]
    for name, entry in variants.items():
        where = f"variants.{_key(name)}"
        if not isinstance(entry, dict) or "file" not in entry:
            raise BundleError(f"{MANIFEST_NAME}: {where} names no file; {PATH_HINT}")
        refs.append((f"{where}.file", entry["file"], True))
        if isinstance(entry["file"], str) and entry["file"].endswith(".xml"):  # OpenVINO IR: weights beside it
            refs.append((f"{where}.file's weights", entry["file"][:-len(".xml")] + ".bin", True))
        external = entry.get("external_data", [])
        if not isinstance(external, list):
            raise BundleError(f"{MANIFEST_NAME}: {where}.external_data is not a list; {PATH_HINT}")
        refs += [(f"{where}.external_data", rel, True) for rel in external]
    if variants or "file" in tokenizer:
        refs.append(("tokenizer", TOKENIZER_NAME, True))  # the file Bundle.tokenizer loads
        if tokenizer.get("file", TOKENIZER_NAME) != TOKENIZER_NAME:
            refs.append(("tokenizer.file", tokenizer["file"], True))
    return refs


def check_manifest_paths(manifest: dict, where, bundle_dir: str | os.PathLike | None = None) -> None:
    """Refuse a manifest naming any path outside its bundle, before anything is read, fetched or written.

    Every reference (:func:`manifest_paths`) must pass :func:`path_problem`; a file a variant or the tokenizer
    loads must be listed in ``files`` (so a hash covers it); with ``bundle_dir`` (a local copy), no reference may
    lead out of it through a symlink.

    Args:
        where: the bundle as messages name it (a directory or a URI).

    Raises:
        BundleError: one line naming the entry and the rule it broke.
    """
    files = manifest.get("files", {})
    try:
        refs = manifest_paths(manifest)
    except BundleError as e:
        raise BundleError(f"bundle {where}: {e}") from e
    for field, rel, listed in refs:
        problem = path_problem(rel)
        if problem is None and listed and rel not in files:
            problem = UNLISTED
        if problem is None and bundle_dir is not None:
            problem = _escape(Path(bundle_dir), rel)
        if problem:
            raise _refuse(where, field, rel, problem)


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


def _parse_manifest(raw: bytes | str, where: str) -> dict:
    """The manifest in ``raw``, its format and the paths it names checked (lexically: no disk access)."""
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise BundleError(f"cannot read {where}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{where}: unknown bundle format {found!r}, expected {BUNDLE_FORMAT}")
    return manifest


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    """The manifest of a local bundle, refused unless every path it names stays inside ``bundle_dir``
    (:func:`check_manifest_paths`, symlinks resolved)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist; run `docscore export-onnx` first")
    if not path.is_file():
        if (Path(bundle_dir) / "config.json").is_file():  # a checkpoint or a Hugging Face model folder
            raise BundleError(f"{bundle_dir} is a model folder, not a bundle: score and verify read a bundle; run "
                              f"`docscore export-onnx {bundle_dir} --output BUNDLE` first, then pass --model BUNDLE")
        raise BundleError(f"{bundle_dir} is not a docscore bundle: {MANIFEST_NAME} is missing; run "
                          "`docscore export-onnx CHECKPOINT --output BUNDLE` to make one")
    try:
        raw = path.read_text()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e}") from e
    manifest = _parse_manifest(raw, str(path))
    check_manifest_paths(manifest, bundle_dir, bundle_dir)
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
        p = bundle_file(bundle_dir, rel, "files entry")  # never hash a path outside the bundle
        if not p.is_file():
            result[rel] = f"{rel}: missing"
        elif sha256_file(p) != expected:
            result[rel] = f"{rel}: sha256 mismatch (file changed or truncated since export)"
        else:
            result[rel] = None
    return result


def verify_files(bundle_dir: str | os.PathLike, manifest: dict, where=None) -> None:
    """Refuse a bundle whose files are missing, truncated or changed since export (``where``: the bundle as the
    message names it, default ``bundle_dir``)."""
    problems = [p for p in check_files(bundle_dir, manifest).values() if p]
    if problems:
        raise BundleError(
            f"bundle {where or bundle_dir} failed its hash check: " + "; ".join(problems)
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
    """A local directory holding the bundle at ``uri``: the directory itself for a local path, else a verified
    copy in the local cache (:func:`docscore.files.cache_root`, under ``bundles/<sha256 of docscore.json>``).

    A remote manifest is checked before anything is fetched or written (:func:`check_manifest_paths`: only plain
    relative paths inside the bundle); the copy is assembled in a private temporary folder inside the cache, its
    manifest digest and file hashes are checked there, and only a complete, verified copy is moved into place. A
    refused bundle leaves nothing in the cache. A local directory is checked by :func:`load_bundle`.

    Args:
        endpoint: an S3-compatible endpoint for ``s3://`` URIs that name none.
        refresh: copy again even when the cache holds this manifest's bundle.

    Raises:
        BundleError: the manifest names a path outside the bundle, a file is missing or fails its hash, the
            manifest was edited, or the store cannot be read.
    """
    return _fetch(uri, endpoint, refresh)[0]


def _fetch(uri: str | os.PathLike, endpoint: str | None, refresh: bool) -> tuple[Path, bool]:
    """:func:`fetch_bundle`, and whether the copy returned was verified here (``False``: a local directory or a
    cached copy, which :func:`load_bundle` checks)."""
    from docscore import storage

    if not storage.has_scheme(uri):
        return Path(uri), False
    loc = storage.resolve(uri, endpoint)
    if loc.is_local:
        return Path(loc.path), False
    try:
        raw = storage.read_bytes(loc.fs, loc.join(MANIFEST_NAME))
    except OSError as e:
        raise BundleError(f"cannot read the bundle {loc.uri}: {storage.explain(e)}") from e
    if raw is None:
        raise BundleError(f"{loc.uri} is not a docscore bundle: {MANIFEST_NAME} is missing")
    manifest = _parse_manifest(raw, f"{loc.uri}/{MANIFEST_NAME}")
    check_manifest_paths(manifest, loc.uri)  # before anything is fetched or written
    from docscore.files import cache_root

    cache = cache_root() / "bundles"
    local = cache / hashlib.sha256(raw).hexdigest()
    if (local / MANIFEST_NAME).is_file() and not refresh:
        return local, False
    verify_digest(loc.uri, manifest, allow_unsealed=True)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", suffix=".tmp", dir=cache))  # mode 0700
    except OSError as e:
        raise BundleError(f"cannot copy the bundle {loc.uri} into {cache}: {e}") from e
    try:
        for rel in manifest.get("files", {}):
            _copy_in(loc, rel, tmp / rel)  # rel is a plain relative path: tmp/rel stays inside tmp
        (tmp / MANIFEST_NAME).write_bytes(raw)
        verify_files(tmp, manifest, where=loc.uri)
        shutil.rmtree(local, ignore_errors=True)
        os.replace(tmp, local)
    except OSError as e:
        if not (local / MANIFEST_NAME).is_file():  # another process may have finished the same copy
            raise BundleError(f"cannot copy the bundle {loc.uri}: {storage.explain(e)}") from e
        return local, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local, True


def _copy_in(loc, rel: str, dst: Path) -> None:
    """Copy one bundle file from the store to ``dst`` (a new file); a missing one is left to the hash check."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = loc.fs.open_input_stream(loc.join(rel))
    except FileNotFoundError:
        log.warning("bundle %s: %s is missing", loc.uri, rel)  # reported by the hash check
        return
    with src, open(dst, "xb") as out:
        while block := src.read(1 << 22):
            out.write(block)


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

    A remote bundle is copied once into a local cache (:func:`fetch_bundle`: its paths checked first, the copy
    verified before it enters the cache), since runtimes load local files; a copy already cached is hash-checked
    like any local bundle, and one that fails its check is copied again once (the store may have been fixed since).
    """
    from docscore import storage

    local, verified = _fetch(uri, endpoint, refresh=False)
    if not storage.has_scheme(uri) or storage.resolve(uri, endpoint).is_local:
        return load_bundle(local)
    try:
        bundle = load_bundle(local, verify=not verified)  # a fresh copy was verified before it entered the cache
    except BundleError:
        bundle = load_bundle(fetch_bundle(uri, endpoint, refresh=True))
    return Bundle(bundle.path, bundle.manifest, uri=storage.resolve(uri, endpoint).uri)
