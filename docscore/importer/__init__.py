"""``docscore import``: models that were not trained here, turned into a docscore checkpoint ``export-onnx`` takes.

Two kinds of source (a Hugging Face ``*ForSequenceClassification`` folder needs no import: ``export-onnx`` takes
it as it is):

- a **state dict** of a seed-style module (an ``AutoModel`` body + a linear head, saved with
  ``torch.save(model.state_dict())`` or as ``.safetensors``): :mod:`docscore.importer.state_dict`;
- a **SetFit** model folder (sentence-transformers body, pooling, optional normalisation, a scikit-learn logistic
  regression head): :mod:`docscore.importer.setfit`.

Either must fit exactly — no silent partial load — and no pickle is ever loaded in a way that can run code.
The checkpoint records where it came from (``origin`` in its ``config.json``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from docscore.errors import ConfigError
from docscore.spec import POOLINGS, PROBLEM_TYPES

log = logging.getLogger(__name__)

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass
class ImportOptions:
    """What ``docscore import`` is asked; the CLI flags map one to one onto these fields.

    Args:
        output: the checkpoint directory to write. An existing docscore checkpoint there is replaced; any other
            non-empty directory is refused.
        body: state dicts only: the folder (or hub name) whose ``config.json`` and tokenizer describe the body.
            Only its config and tokenizer are read: every weight comes from the state dict.
        pooling: state dicts only: what the head reads, ``pooler`` (the seed's ``pooler_output``), ``cls`` or
            ``mean``.
        labels: label names in logit order: a comma list, or a file with one label per line. Required for a
            state dict; for SetFit, overrides the names the model carries.
        problem_type: state dicts only: ``single_label`` (softmax, the seed), ``multi_label`` or ``regression``.
        max_length: tokens per text; default: SetFit's ``max_seq_length``, else the tokenizer's
            ``model_max_length`` within the body's positions.
    """

    output: Path
    body: str | None = None
    pooling: str = "pooler"  # pooler: the seed classifies from pooler_output
    labels: tuple[str, ...] | str | None = None
    problem_type: str = "single_label"  # single_label: the seed's softmax classifier
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"--problem-type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if isinstance(self.labels, str):
            self.labels = parse_labels(self.labels)
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2, got {self.max_length}")


def parse_labels(value: str) -> tuple[str, ...]:
    """``a,b,c``, or the path of a file with one label per line (blank lines skipped)."""
    path = Path(value)
    if path.is_file():
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not labels:
            raise ConfigError(f"--labels {path}: the file names no label")
        return tuple(labels)
    labels = [x.strip() for x in value.split(",")]
    if not all(labels):
        raise ConfigError(f"--labels {value!r}: an empty label name; give A,B,C or a file with one label per line")
    return tuple(labels)


def source_kind(src: Path) -> str:
    """``state_dict`` or ``setfit``; anything else is refused, naming what was found."""
    from docscore.errors import CheckpointError

    if src.is_file():
        if src.suffix in STATE_DICT_SUFFIXES:
            return "state_dict"
        raise CheckpointError(f"{src} is a {src.suffix or 'suffix-less'} file; docscore import takes a state dict "
                              f"({', '.join(STATE_DICT_SUFFIXES)}) or a SetFit model folder")
    if not src.is_dir():
        raise CheckpointError(f"{src} does not exist; docscore import takes a state dict "
                              f"({', '.join(STATE_DICT_SUFFIXES)}) or a SetFit model folder")
    if (src / "model_head.pkl").is_file() or (src / "config_setfit.json").is_file():
        return "setfit"
    found = _describe_folder(src)
    hint = (f"; export-onnx takes it as it is: docscore export-onnx {src} --output BUNDLE"
            if found.endswith("ForSequenceClassification") or found == "a docscore checkpoint" else "")
    raise CheckpointError(f"{src} holds {found}{hint}. docscore import takes a state dict "
                          f"({', '.join(STATE_DICT_SUFFIXES)}) or a SetFit model folder")


def _describe_folder(src: Path) -> str:
    import json

    try:
        config = json.loads((src / "config.json").read_text())
    except (OSError, ValueError):
        return "no readable config.json"
    if str(config.get("format", "")).startswith("docscore-checkpoint"):
        return "a docscore checkpoint"
    archs = config.get("architectures") or []
    return ", ".join(archs) if archs else f"a {config.get('model_type', 'model')} config with no architecture"


def check_output(src: Path, output: Path) -> None:
    """Refuse to write over the source or over anything that is not a docscore checkpoint."""
    from docscore.checkpoint import CHECKPOINT_FORMAT, CONFIG_NAME

    if output.absolute() == src.absolute() or src.absolute() in output.absolute().parents:
        raise ConfigError(f"--output {output} is (inside) the source {src}; choose another --output")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        cfg = output / CONFIG_NAME
        if not (cfg.is_file() and CHECKPOINT_FORMAT in cfg.read_text()):
            raise ConfigError(f"{output} exists and is not a docscore checkpoint; refusing to replace it. Choose "
                              "another --output or remove it.")


def import_model(src: str | os.PathLike, options: ImportOptions) -> Path:
    """Turn ``src`` (a state dict or a SetFit folder) into a docscore checkpoint at ``options.output``.

    Raises:
        CheckpointError: ``src`` is not importable, or does not fit (missing, unexpected or mis-shaped weights,
            an unsupported head); nothing was written.
        ConfigError: bad options (labels that do not match the head, an output that is not a checkpoint).

    Returns:
        the checkpoint directory.
    """
    src = Path(src)
    kind = source_kind(src)
    check_output(src, options.output)
    if kind == "setfit":
        from docscore.importer.setfit import import_setfit

        return import_setfit(src, options)
    from docscore.importer.state_dict import import_state_dict

    return import_state_dict(src, options)
