"""The facts every part shares: labels, problem type, pooling, max length, input names.

Torch-free on purpose: the trainer writes a :class:`ModelSpec` into the checkpoint's ``config.json``, the
exporter copies it into the bundle's ``docscore.json``, and the scorer reads it back from there. Nothing
re-derives these facts elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from docscore.errors import ConfigError

POOLINGS = ("cls", "mean", "pooler")
PROBLEM_TYPES = ("single_label", "multi_label", "regression")


@dataclass(frozen=True)
class HeadConfig:
    """The classification head on top of the body: pooling → dropout → [hidden → act → dropout] → linear.

    Args:
        labels: label names in logit order (``id2label``). Regression uses one name per target.
        problem_type: ``single_label`` (softmax), ``multi_label`` (sigmoid per label) or ``regression``.
        pooling: ``mean`` (mask-aware mean of the last hidden state; works for every body), ``cls`` (first
            token) or ``pooler`` (the body's pooler output; only bodies that have a trained pooler).
        dropout: dropout before each linear layer, active in training only.
        hidden_dim: size of an optional hidden layer; ``None`` means pooled → linear directly.
        normalize: L2-normalise the pooled vector before the head (a SetFit head was fitted on normalised
            sentence-transformers embeddings).
    """

    labels: tuple[str, ...]
    problem_type: str = "single_label"  # single_label: softmax over labels, like the seed
    pooling: str = "mean"  # mean: safe for bodies without a trained pooler (sentence-transformers)
    dropout: float = 0.1  # the seed's value
    hidden_dim: int | None = None  # None: pooled -> linear, as in the seed
    normalize: bool = False  # True: unit-length pooled vector, like sentence-transformers' Normalize module

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if not self.labels:
            raise ConfigError("a head needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be unique, got {list(self.labels)}")
        if self.problem_type == "single_label" and len(self.labels) < 2:
            raise ConfigError("single_label classification needs at least two labels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class ModelSpec:
    """What a scorer must know about a trained model, besides its weights.

    Args:
        head: the head configuration (labels, problem type, pooling).
        max_length: tokens per sequence the model was trained and verified with.
        input_names: model inputs in order; ``token_type_ids`` only for bodies that use it.
        body_type: the body's ``model_type`` (``bert``, ``distilbert``, ...), for information.
    """

    head: HeadConfig
    max_length: int
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    body_type: str = ""
    output_name: str = "logits"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_names", tuple(self.input_names))
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")

    def to_dict(self) -> dict:
        return {
            "head": self.head.to_dict(),
            "max_length": self.max_length,
            "input_names": list(self.input_names),
            "body_type": self.body_type,
            "output_name": self.output_name,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(
            head=HeadConfig.from_dict(d["head"]),
            max_length=int(d["max_length"]),
            input_names=tuple(d.get("input_names", ("input_ids", "attention_mask"))),
            body_type=d.get("body_type", ""),
            output_name=d.get("output_name", "logits"),
            extra=d.get("extra", {}),
        )


def spec_differences(bundle: ModelSpec, checkpoint: ModelSpec, *, max_length_override: int | None = None) -> list[str]:
    """The facts on which a bundle's spec and its checkpoint's disagree, one line per field (empty: they agree).

    Compared: labels (and their order), problem type, pooling, the head's hidden layer, max_length and input
    names. ``max_length`` may differ only where the export asked for it (``export-onnx --max-length``), which the
    manifest records as ``max_length_override``.
    """
    pairs = {
        "labels": (list(bundle.head.labels), list(checkpoint.head.labels)),
        "problem_type": (bundle.head.problem_type, checkpoint.head.problem_type),
        "pooling": (bundle.head.pooling, checkpoint.head.pooling),
        "hidden_dim": (bundle.head.hidden_dim, checkpoint.head.hidden_dim),
        "normalize": (bundle.head.normalize, checkpoint.head.normalize),
        "input_names": (list(bundle.input_names), list(checkpoint.input_names)),
    }
    if bundle.max_length != max_length_override:
        pairs["max_length"] = (bundle.max_length, checkpoint.max_length)
    return [f"{name}: bundle has {b!r}, checkpoint has {c!r}" for name, (b, c) in pairs.items() if b != c]
