"""The parity gate's texts travel with the model: a bounded sample of the evaluation texts, kept in the checkpoint
by ``train`` (and ``import`` where it is given texts), copied into the bundle by ``export-onnx``, re-read by
``verify`` — so every gate of a model runs on the model's own kind of text, never on whatever folder a command
happens to run in.

``gate_texts.json``::

    {"format": "docscore-gate-texts/1", "source": "<where the texts came from>", "rows": N,
     "sha256": "<of the canonical JSON of texts>", "texts": [...]}

Torch-free: scoring hosts and ``verify`` read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from docscore.errors import BundleError

GATE_TEXTS_NAME = "gate_texts.json"
FORMAT = "docscore-gate-texts/1"
MAX_TEXTS = 300  # rows kept: enough for label agreement at 1 % resolution, small enough to ship in every bundle
MAX_CHARS = 8_192  # characters kept per text: beyond the max_length of any model docscore exports, so no loss


def digest(texts: list[str]) -> str:
    """sha256 of the texts' canonical JSON."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def sample(texts, limit: int = MAX_TEXTS) -> list[str]:
    """The first ``limit`` non-empty texts, each cut at :data:`MAX_CHARS` characters."""
    out = []
    for t in texts:
        if isinstance(t, str) and t.strip():
            out.append(t[:MAX_CHARS])
            if len(out) == limit:
                break
    return out


def to_json(texts, source: str, limit: int = MAX_TEXTS) -> str:
    """The ``gate_texts.json`` content for ``texts`` (bounded by :func:`sample`)."""
    kept = sample(texts, limit)
    return json.dumps({"format": FORMAT, "source": source, "rows": len(kept), "sha256": digest(kept),
                       "texts": kept}, ensure_ascii=False, indent=1) + "\n"


def write(folder: str | os.PathLike, texts, source: str, limit: int = MAX_TEXTS) -> Path:
    path = Path(folder) / GATE_TEXTS_NAME
    path.write_text(to_json(texts, source, limit), encoding="utf-8")
    return path


def read(folder: str | os.PathLike) -> tuple[list[str], str, str] | None:
    """``(texts, source, sha256)`` of ``folder/gate_texts.json``, or ``None`` when the folder has none.

    Raises:
        BundleError: the file is malformed or its texts do not match their digest.
    """
    path = Path(folder) / GATE_TEXTS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        texts, recorded = data["texts"], data["sha256"]
        ok = data.get("format") == FORMAT and isinstance(texts, list) and all(isinstance(t, str) for t in texts)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path}: not a docscore gate-texts file ({e}); re-export or pass --verify-data") from e
    if not ok or not texts or len(texts) > MAX_TEXTS or any(len(t) > MAX_CHARS for t in texts):
        raise BundleError(f"{path}: malformed or over its bounds ({MAX_TEXTS} texts of {MAX_CHARS} characters); "
                          "re-export or pass --verify-data")
    if digest(texts) != recorded:
        raise BundleError(f"{path}: its texts no longer match their sha256; re-export or pass --verify-data")
    return texts, str(data.get("source", path)), recorded
