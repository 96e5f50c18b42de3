"""Bodies whose attention is not a plain function of the tokens: exported faithfully, or refused up front.

An ONNX trace records the one code path the example batch took. A body whose attention *changes with the input
length* would be traced on one path and asked, at scoring time, to follow another. Each such body is either put
in the single mode a freshly loaded model really uses for every input the bundle can see, or refused by name
before anything is exported.
"""

from __future__ import annotations

import logging

from docscore.errors import ExportError

log = logging.getLogger(__name__)

# model_type -> why it cannot be exported (checked before tracing, so no half-built bundle and no cryptic crash).
REFUSED = {
    "longformer": "its sliding-window attention pads every input to a multiple of attention_window and gathers "
                  "windows with shapes fixed at trace time: the legacy exporter's graph fails on other lengths "
                  "(Gather index out of bounds) and the dynamo exporter cannot export it",
    "led": "its encoder uses Longformer's sliding-window attention (see longformer)",
}


def bigbird_full_attention_limit(config) -> int:
    """The longest sequence for which Hugging Face BigBird falls back to full attention.

    ``BigBirdModel.forward`` switches a ``block_sparse`` body to ``original_full`` *for good* the first time it
    sees a sequence of at most this many tokens (global + sliding + random blocks), with a warning.
    """
    return (5 + 2 * int(config.num_random_blocks)) * int(config.block_size)


def prepare_body(model, max_length: int) -> dict:
    """Refuse bodies that cannot be exported faithfully; put the others in the mode every input will see.

    Called on the traced model and on every freshly loaded reference model (export and ``verify``), so both run
    the same attention.

    Returns:
        facts for the manifest (empty for ordinary bodies), e.g. ``{"attention_type": "original_full", ...}``.

    Raises:
        ExportError: the body is refused; the message names its model type and what to do.
    """
    config = model.body.config
    model_type = getattr(config, "model_type", "")
    if model_type in REFUSED:
        raise ExportError(f"{model_type} bodies cannot be exported to ONNX by docscore: {REFUSED[model_type]}. "
                          "Train on a body with full attention (BERT, RoBERTa, DeBERTa-v2, ...) to deploy with "
                          "docscore.")
    if model_type == "big_bird" and getattr(config, "attention_type", "") == "block_sparse":
        limit = bigbird_full_attention_limit(config)
        if max_length > limit:
            raise ExportError(
                f"big_bird with attention_type='block_sparse' cannot be exported faithfully at max_length "
                f"{max_length}: its attention changes with the input length (full attention up to {limit} tokens, "
                f"block sparse above, and a loaded model switches itself to full attention for good the first "
                f"time it sees a short batch, so even PyTorch's output depends on what it saw before). Retrain "
                f"with attention_type='original_full', or export with --max-length {limit} or less (then every "
                f"input runs full attention, as in PyTorch)."
            )
        # Every input is at most max_length <= limit tokens: a loaded model runs full attention on all of them.
        model.body.set_attention_type("original_full")
        log.info("big_bird block_sparse body exported with original_full attention: max_length %d <= %d, the "
                 "length below which Hugging Face BigBird always uses full attention", max_length, limit)
        return {"attention_type": "original_full", "attention_type_configured": "block_sparse",
                "full_attention_limit": limit}
    return {}
