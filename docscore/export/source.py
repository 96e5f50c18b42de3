"""What ``export-onnx`` and ``verify --checkpoint`` take: a docscore checkpoint, or a Hugging Face
``*ForSequenceClassification`` folder, exported as ``transformers`` defines it.

A :class:`SourceModel` is the one seam between "a model on disk" and the exporter: a fresh PyTorch model in eval
mode whose ``forward`` returns logits (the PyTorch side of the gate), the :class:`~docscore.spec.ModelSpec`, the
training tokenizer, the body config and the weights' digest. Variants, the gate, invariance and the manifest do
not know which kind they were given.

Anything else is refused before a file is written, naming what was found and what is supported: a bare encoder
(``AutoModel``, sentence-transformers), a causal or masked LM, a token classifier, an architecture docscore does not
test, a SetFit model or a state dict (both go through ``docscore import`` first).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from docscore.files import sha256_file
from docscore.errors import CheckpointError
from docscore.spec import HeadConfig, ModelSpec

log = logging.getLogger(__name__)

KINDS = ("docscore", "transformers")

# model_type -> what the architecture's own head reads (spec.head.pooling; the head itself is transformers').
# BERT: pooler (dense + tanh on [CLS]) -> dropout -> linear; RoBERTa/XLM-R, ELECTRA: dense on <s> -> out_proj;
# DistilBERT: pre_classifier + ReLU on [CLS]; DeBERTa-v2: context pooler on [CLS]; ModernBERT: its
# config.classifier_pooling ("cls" or "mean") -> prediction head. MiniLM checkpoints are model_type "bert".
HF_POOLING = {"bert": "pooler", "distilbert": "cls", "roberta": "cls", "xlm-roberta": "cls", "electra": "cls",
              "deberta-v2": "cls", "modernbert": None}
HF_PROBLEM_TYPES = {"single_label_classification": "single_label", "multi_label_classification": "multi_label",
                    "regression": "regression"}
SUPPORTED = ("a docscore checkpoint (docscore train / docscore import) or a Hugging Face *ForSequenceClassification "
             f"folder ({', '.join(HF_POOLING)})")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# A *ForX suffix -> what the folder is, for the refusal.
OTHER_HEADS = (("ForCausalLM", "a causal language model"), ("LMHeadModel", "a language model"),
               ("ForMaskedLM", "a masked language model"), ("ForTokenClassification", "a token classifier"),
               ("ForQuestionAnswering", "a question-answering model"), ("ForMultipleChoice", "a multiple-choice model"),
               ("ForPreTraining", "a pre-training model"), ("ForConditionalGeneration", "a sequence-to-sequence model"))


@dataclass(frozen=True)
class SourceModel:
    """A model the exporter can take, whatever wrote it.

    Args:
        kind: ``docscore`` (a checkpoint) or ``transformers`` (a ``*ForSequenceClassification`` folder).
        path: the folder.
        spec: labels, problem type, pooling, max_length and input names, as the bundle will record them.
        body_config: the (body) config as a dict: sizes for the optimizer and the manifest.
        weights: the weights file whose sha256 the manifest keeps (the index file of a sharded model).
        architecture: the transformers class (``BertForSequenceClassification``), for ``transformers`` sources.
    """

    kind: str
    path: Path
    spec: ModelSpec
    body_config: dict
    weights: Path
    architecture: str = ""

    def load_model(self, device: str = "cpu"):
        """A fresh model in eval mode: ``forward(input_ids, attention_mask[, token_type_ids]) -> logits``, with
        ``.body`` (config, attention switch) and ``.input_names``."""
        if self.kind == "docscore":
            from docscore.checkpoint import load_checkpoint

            return load_checkpoint(self.path, device=device)[0]
        return _load_transformers(self.path, device)

    def load_tokenizer(self):
        """The tokenizer the model was trained with (the folder's own)."""
        return _load_tokenizer(self.path)

    def describe(self) -> dict:
        """The manifest's ``export.checkpoint`` entry."""
        out = {"path": str(self.path.absolute()), "kind": self.kind, "max_length": self.spec.max_length,
               "weights": self.weights.name, "weights_sha256": sha256_file(self.weights)}
        if self.architecture:
            out["architecture"] = self.architecture
        return out


def open_source(path: str | os.PathLike) -> SourceModel:
    """Recognise what ``path`` holds and read its facts (no weights are loaded).

    Raises:
        CheckpointError: not something ``export-onnx`` takes; the message names what was found, what is supported
            and the next step.
    """
    path = Path(path)
    if not path.exists() and _looks_like_hub_name(str(path)):
        path = _download(str(path))
    if path.is_file():
        hint = _import_hint(path)
        raise CheckpointError(f"{path} is a file{hint}; export-onnx takes {SUPPORTED}")
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist; export-onnx takes {SUPPORTED}")
    cfg_path = path / "config.json"
    if _is_setfit(path):
        raise CheckpointError(f"{path} is a SetFit model (sentence-transformers body + model_head.pkl); turn it into a "
                              f"docscore checkpoint first: docscore import {path} --output CKPT")
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} holds no config.json, so it is not a model folder; export-onnx takes {SUPPORTED}")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path} is not readable JSON ({e}); export-onnx takes {SUPPORTED}") from e
    if config.get("format", "").startswith("docscore-checkpoint"):
        return _docscore_source(path)
    return _transformers_source(path, config)


HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*")  # never a pickle from the hub


def _looks_like_hub_name(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def _download(name: str) -> Path:
    """A hub repository's config, safetensors weights and tokenizer, where the network allows."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=list(HUB_FILES)))
    except Exception as e:  # offline, unknown repository, gated, no network: the hub raises many types
        raise CheckpointError(f"{name} is not a local folder and could not be fetched from the Hugging Face hub "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass a local "
                              "folder (HF_HUB_OFFLINE=1 forbids downloads)") from e


def _import_hint(path: Path) -> str:
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        return (f" (a state dict?): turn it into a docscore checkpoint first: docscore import {path} --body BODY "
                "--labels A,B --output CKPT")
    return ""


def _is_setfit(path: Path) -> bool:
    return (path / "model_head.pkl").is_file() or (path / "config_setfit.json").is_file()


def _docscore_source(path: Path) -> SourceModel:
    from docscore.checkpoint import WEIGHTS_NAME, read_checkpoint_config

    config = read_checkpoint_config(path)
    return SourceModel("docscore", path, ModelSpec.from_dict(config["spec"]), dict(config["body_config"]),
                       path / WEIGHTS_NAME)


def _refuse_architecture(path: Path, config: dict) -> None:
    """Raise unless ``config`` names a supported ``*ForSequenceClassification``."""
    archs = config.get("architectures") or []
    model_type = config.get("model_type", "")
    found = f"{', '.join(archs) or 'no architecture'} (model_type {model_type or 'unset'})"
    if not archs:
        raise CheckpointError(f"{path}/config.json names no architecture ({found}), so its head is unknown; "
                              f"export-onnx takes {SUPPORTED}")
    arch = archs[0]
    if arch.endswith("ForSequenceClassification"):
        if model_type not in HF_POOLING:
            raise CheckpointError(f"{path} holds {found}: an architecture docscore does not export or test; "
                                  f"export-onnx takes {SUPPORTED}")
        return
    what = next((desc for suffix, desc in OTHER_HEADS if arch.endswith(suffix)), None)
    if what is None and arch.endswith("Model"):
        st = (path / "modules.json").is_file()
        what = "a sentence-transformers encoder" if st else "a bare encoder (AutoModel)"
        raise CheckpointError(f"{path} holds {found}: {what} without a classification head; export-onnx takes "
                              f"{SUPPORTED}. Train a head on it with docscore train --body {path}, or bring the "
                              f"head's state dict: docscore import STATE_DICT --body {path}")
    raise CheckpointError(f"{path} holds {found}: {what or 'not a sequence classifier'}; export-onnx takes "
                          f"{SUPPORTED}")


def _transformers_source(path: Path, raw: dict) -> SourceModel:
    from transformers import AutoConfig

    _refuse_architecture(path, raw)
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}/config.json cannot be read by transformers ({e}); export-onnx takes "
                              f"{SUPPORTED}") from e
    arch = raw["architectures"][0]
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path} holds a {arch} config but no weights ({', '.join(WEIGHT_FILES)}); save the "
                              "model with model.save_pretrained(FOLDER)")
    num_labels = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(num_labels)):
        raise CheckpointError(f"{path}/config.json: id2label {config.id2label} does not name labels 0..{num_labels - 1}; "
                              "fix id2label in config.json")
    labels = tuple(id2label[i] for i in range(num_labels))
    problem = config.problem_type
    if problem is None:
        if num_labels == 1:
            raise CheckpointError(f"{path}/config.json has one label and no problem_type: transformers trains it as "
                                  "regression but pipeline() applies a sigmoid. Set \"problem_type\" to \"regression\" "
                                  "or \"multi_label_classification\" in config.json")
        problem = "single_label_classification"  # what the model's loss and pipeline() both assume
    if problem not in HF_PROBLEM_TYPES:
        raise CheckpointError(f"{path}/config.json: problem_type {problem!r} is not one of {list(HF_PROBLEM_TYPES)}")
    pooling = HF_POOLING[config.model_type] or str(getattr(config, "classifier_pooling", "cls"))
    if pooling not in ("cls", "mean", "pooler"):
        raise CheckpointError(f"{path}: {arch} with classifier_pooling={pooling!r} is not supported (cls, mean)")
    head = HeadConfig(labels=labels, problem_type=HF_PROBLEM_TYPES[problem], pooling=pooling)
    tokenizer = _load_tokenizer(path)
    from docscore.model import default_max_length

    spec = ModelSpec(head, default_max_length(config, tokenizer), _input_names(arch, config), config.model_type,
                     extra={"head": {"source": "transformers", "architecture": arch}})
    return SourceModel("transformers", path, spec, config.to_dict(), weights, architecture=arch)


def _load_tokenizer(path: Path):
    from docscore.checkpoint import load_tokenizer

    try:
        return load_tokenizer(path)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has no loadable tokenizer ({e}); save it beside the model with "
                              "tokenizer.save_pretrained(FOLDER)") from e


def _input_names(arch: str, config) -> tuple[str, ...]:
    import transformers

    from docscore.model import forward_input_names

    return forward_input_names(getattr(transformers, arch).forward, config)


def _load_transformers(path: Path, device: str):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from docscore.model import TransformersClassifier

    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32,
                                                                         output_loading_info=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"transformers cannot load {path}: {e}") from e
    missing = list(info.get("missing_keys") or [])
    mismatched = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in info.get("mismatched_keys") or []]
    if missing or mismatched:
        raise CheckpointError(f"{path}: the weights do not fit {type(model).__name__}: missing={missing} "
                              f"mismatched={mismatched}; nothing of a partial load is exported. Save the trained "
                              "model with model.save_pretrained(FOLDER)")
    if info.get("unexpected_keys"):
        log.warning("%s: weights the model does not use were ignored: %s", path, info["unexpected_keys"])
    return TransformersClassifier(model).to(device).eval()
