"""INPUT arguments → shards (input file + output path relative to OUT), and input fingerprints."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import ConfigError, InputDataError

_TAIL_BYTES = 1 << 16  # the Parquet footer (schema, row groups, statistics) lives at the end of the file


@dataclass(frozen=True)
class Shard:
    """One input file and where its output goes (``rel``, relative to the output directory)."""

    path: Path
    rel: str


def discover(inputs: list[str | os.PathLike], exclude: Path | None = None) -> list[Shard]:
    """Expand files, directories (every ``*.parquet`` below, recursively) and globs, in a stable order.

    Output paths mirror the layout under each directory or glob root; a plain file keeps its name. Two inputs
    mapping to the same output path are refused.
    """
    shards: dict[str, Shard] = {}
    for item in inputs:
        item = str(item)
        if glob.has_magic(item):
            root = Path(_glob_root(item))
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise InputDataError(f"no files match {item!r}", path=item)
            pairs = [(p, p.relative_to(root).as_posix()) for p in found]
        elif Path(item).is_dir():
            root = Path(item)
            found = sorted(p for p in root.rglob("*.parquet") if p.is_file())
            pairs = [(p, p.relative_to(root).as_posix()) for p in found]
            if not pairs:
                raise InputDataError(f"directory {item} holds no *.parquet files", path=item)
        elif Path(item).is_file():
            pairs = [(Path(item), Path(item).name)]
        else:
            raise InputDataError(f"input {item} does not exist", path=item)
        for path, rel in pairs:
            if exclude is not None and _inside(path, exclude):
                continue
            if not rel.endswith(".parquet"):
                rel += ".parquet"
            if rel in shards and shards[rel].path.resolve() != path.resolve():
                raise ConfigError(f"inputs {shards[rel].path} and {path} would both write {rel}; "
                                  "score them into different output directories")
            shards[rel] = Shard(path, rel)
    return list(shards.values())


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    root = []
    for part in parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return str(Path(*root)) if root else "."


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


def fingerprint(path: str | os.PathLike) -> dict:
    """Size, modification time and a hash of the footer: cheap, and any rewrite of a Parquet file changes it."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(max(0, st.st_size - _TAIL_BYTES))
        h.update(f.read(_TAIL_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "tail_sha256": h.hexdigest()}
