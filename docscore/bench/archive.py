"""Benchmark archives built from real text on this machine (package documentation), written as Parquet.

``long``: whole documentation files (READMEs, package descriptions, changelogs), thousands of tokens each.
``mixed``: mostly short snippets (a sentence to a paragraph) with a share of long documents, like a support
inbox or a web crawl.
"""

from __future__ import annotations

import gzip
import random
import site
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MIN_CHARS = 2000


def _roots() -> list[Path]:
    roots = {Path(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    roots |= {Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return sorted(r for r in roots if r.is_dir())


def real_documents(limit: int = 5000) -> list[str]:
    """Documentation texts found on this machine, deterministic order, each at least ``MIN_CHARS`` long."""
    docs: list[str] = []
    seen: set[int] = set()
    patterns = ("**/METADATA", "**/*.md", "**/*.rst", "**/*.txt")
    candidates: list[Path] = []
    for root in _roots():
        for pat in patterns:
            candidates.extend(root.glob(pat))
    doc_dir = Path("/usr/share/doc")
    if doc_dir.is_dir():
        candidates.extend(doc_dir.glob("*/changelog*.gz"))
        candidates.extend(doc_dir.glob("*/README*"))
    for p in sorted(set(candidates)):
        try:
            raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        if len(text) < MIN_CHARS or hash(text) in seen:
            continue
        seen.add(hash(text))
        docs.append(text)
        if len(docs) >= limit:
            break
    if not docs:
        raise RuntimeError("no documentation files found to build a benchmark archive from")
    return docs


def make_archive(out_dir: str | Path, rows: int, kind: str = "long", shards: int = 4, seed: int = 0,
                 row_group_size: int = 1000, skip: int = 0) -> list[Path]:
    """Write ``rows`` documents in ``shards`` Parquet files with columns ``doc_id``, ``text``.

    ``skip``: start at the ``skip``-th documentation file, so ``make_archive(d, 300, skip=600)`` holds other files
    than ``make_archive(d, 600)`` (a calibration sample disjoint from a benchmark archive)."""
    if kind not in ("long", "mixed"):
        raise ValueError("kind must be 'long' or 'mixed'")
    rng = random.Random(seed)
    docs = real_documents()
    texts: list[str] = []
    for i in range(rows):
        k = skip + i
        doc = docs[k] if k < len(docs) else rng.choice(docs)
        if kind == "long":
            # whole files first; beyond that, a long slice from a random offset so repeats are not identical
            start = 0 if k < len(docs) else rng.randrange(0, max(1, len(doc) - MIN_CHARS))
            texts.append(doc[start:start + rng.randint(6000, 40000)] if k >= len(docs) else doc)
        elif rng.random() < 0.8:
            start = rng.randrange(0, max(1, len(doc) - 600))
            texts.append(doc[start:start + rng.randint(30, 600)].strip() or "empty")
        else:
            start = rng.randrange(0, max(1, len(doc) - MIN_CHARS))
            texts.append(doc[start:start + rng.randint(2000, 20000)])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    per = -(-rows // shards)
    for s in range(shards):
        part = texts[s * per:(s + 1) * per]
        if not part:
            break
        table = pa.table({"doc_id": pa.array(range(s * per, s * per + len(part)), pa.int64()), "text": part})
        path = out_dir / f"part-{s:04d}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths
