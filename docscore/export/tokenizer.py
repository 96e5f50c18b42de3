"""The bundle's ``tokenizer.json``: the training tokenizer, carrying the settings the model was verified with."""

from __future__ import annotations

import logging
from pathlib import Path

from docscore.errors import CheckpointError

log = logging.getLogger(__name__)


def write_bundle_tokenizer(hf_tokenizer, path: Path, max_length: int) -> dict:
    """Write ``tokenizer.json`` from the checkpoint's fast tokenizer: truncation at ``max_length``, no padding.

    The saved ``tokenizer.json`` of a model package may carry its own settings (all-MiniLM-L6-v2's carries
    truncation and *fixed* padding at 128, so ``Tokenizer.from_file`` silently yields 128-token inputs);
    the bundle's must carry the length the model was verified with, and leave padding to the scorer.

    Returns:
        the manifest's ``tokenizer`` section: ``{"file", "pad_id", "truncation", "padding"}``.
    """
    from tokenizers import Tokenizer

    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(
            f"the checkpoint's tokenizer ({type(hf_tokenizer).__name__}) is not a fast tokenizer; the bundle needs "
            "a tokenizer.json. Re-save the checkpoint with a fast (tokenizers-backed) tokenizer."
        )
    tok = Tokenizer.from_str(backend.to_str())  # a copy: the checkpoint's tokenizer is left as it was
    if tok.padding:
        log.info("dropping the tokenizer's padding settings %s: the scorer pads per batch", tok.padding)
    tok.no_padding()
    tok.enable_truncation(max_length)
    tok.save(str(path))
    pad_id = hf_tokenizer.pad_token_id
    if pad_id is None:
        pad_id = 0
        log.warning("the tokenizer has no pad token; padding with id 0 (masked out by attention_mask)")
    return {"file": path.name, "pad_id": int(pad_id), "truncation": int(max_length), "padding": None}
