"""Small file helpers shared across docscore: permissions of published folders, the cache root, file digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 22


def sha256_file(path: str | os.PathLike, fs=None) -> str:
    """Hex sha256 of a whole file, read in 4 MiB chunks (bundles can hold multi-GiB external data).

    Args:
        path: a local path, or a path inside ``fs``.
        fs: a ``pyarrow.fs.FileSystem`` (an object store); ``None`` reads the local file.
    """
    h = hashlib.sha256()
    with (fs.open_input_stream(str(path)) if fs is not None else open(path, "rb")) as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def publishable(directory: str | os.PathLike) -> None:
    """Give a directory built under ``tempfile.mkdtemp`` (mode 0700) and its files the usual permissions
    (0777/0666 less the umask), so a checkpoint or bundle renamed into place is readable by the scoring service
    and colleagues like any other file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    root = Path(directory)
    for p in [root, *root.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def cache_root() -> Path:
    """docscore's local cache: ``$DOCSCORE_CACHE_DIR``, else ``$DOCSCORE_CACHE`` (the name remote bundles used
    first), else ``~/.cache/docscore``. Remote bundles are copied under ``bundles/``; the measured default
    variant is kept as ``variant-speed-*.json``."""
    configured = os.environ.get("DOCSCORE_CACHE_DIR") or os.environ.get("DOCSCORE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "docscore"
