"""Checkpoint directories: ``config.json`` + ``model.safetensors`` + tokenizer files. Never a pickle.

``config.json`` holds the body config (so no hub access is needed to rebuild the body), the
:class:`~docscore.spec.ModelSpec` (head, labels, max_length, input names) and training metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from docscore.errors import CheckpointError
from docscore.files import publishable
from docscore.spec import ModelSpec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_FORMAT = "docscore-checkpoint/1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def save_checkpoint(model, tokenizer, output_dir: str | os.PathLike, spec: ModelSpec, training: dict | None = None,
                    extra_files: dict[str, str] | None = None, origin: dict | None = None) -> Path:
    """Write a checkpoint atomically: build it in a temporary sibling, then rename into place.

    Args:
        model: a :class:`~docscore.model.DocClassifier`.
        tokenizer: the Hugging Face tokenizer used in training (saved with ``save_pretrained``).
        output_dir: target directory; replaced if it exists.
        spec: labels, head, max_length, input names.
        training: metadata (arguments, metrics, versions) to keep beside the config.
        extra_files: name → text content of additional files (e.g. ``metrics.json``).
        origin: where an imported model came from (``docscore import``): kind, source path, digests.
    """
    from safetensors.torch import save_model

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        config = {
            "format": CHECKPOINT_FORMAT,
            "spec": spec.to_dict(),
            "body_config": model.body.config.to_dict(),
            "training": training or {},
            **({"origin": origin} if origin else {}),
        }
        save_model(model, str(tmp / WEIGHTS_NAME))  # handles tied weights; safetensors, not pickle
        tokenizer.save_pretrained(str(tmp))
        for name in list(tmp.iterdir()):
            if name.suffix in PICKLE_SUFFIXES:
                name.unlink()
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        publishable(tmp)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def read_checkpoint_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist; train one with `docscore train`")
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a docscore checkpoint: {CONFIG_NAME} is missing")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{cfg_path} is not a docscore checkpoint config (format={config.get('format')!r}). "
            "A plain Hugging Face model folder is a *body*: pass it to `docscore train --body`."
        )
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{path} holds pickle files ({', '.join(pickles)}); docscore loads safetensors only. "
            "Remove them: they were not written by docscore."
        )
    if not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path}: {WEIGHTS_NAME} is missing")
    return config


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild a :class:`~docscore.model.DocClassifier` from a checkpoint, offline, in eval mode.

    Returns:
        ``(model, tokenizer, spec, config)``; the logits equal, bit for bit, those of the model that was saved.
    """
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModel

    from docscore.model import DocClassifier

    path = Path(path)
    config = read_checkpoint_config(path)
    spec = ModelSpec.from_dict(config["spec"])
    body_cfg = dict(config["body_config"])
    model_type = body_cfg.pop("model_type")
    body_config = AutoConfig.for_model(model_type, **body_cfg)
    body = AutoModel.from_config(body_config)
    model = DocClassifier(body, spec.head)
    missing, unexpected = load_model(model, str(path / WEIGHTS_NAME), strict=False, device=device)
    # Some bodies register non-persistent buffers (position ids); anything else missing is a real error.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise CheckpointError(f"{path / WEIGHTS_NAME} does not match the model: missing={missing} unexpected={unexpected}")
    model.to(device).eval()
    return model, load_tokenizer(path), spec, config


def load_tokenizer(path: str | os.PathLike):
    """The checkpoint's (training) Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
