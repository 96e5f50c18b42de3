"""Small file-system helpers shared by the checkpoint and bundle writers."""

from __future__ import annotations

import os
from pathlib import Path


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
