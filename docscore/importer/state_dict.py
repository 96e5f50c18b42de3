"""A seed-style state dict → docscore checkpoint.

The seed's ``CustomModelWithHead`` is an ``AutoModel`` body (``self.base_model``) and one ``nn.Linear``
(``self.classifier``) on ``pooler_output``; ``torch.save(model.state_dict())`` gives keys ``base_model.*`` and
``classifier.{weight,bias}``. Teams name the two attributes differently (``bert``, ``encoder``, ``body``, ...;
``head``, ``fc``, ...), so the body prefix is the one under which the keys fit the body named by ``--body``, and
the head is the single linear layer left over.

The fit is exact or nothing: every body weight present with its shape, no key left unexplained, a head whose
output size is the number of labels. The only keys allowed to be absent are a pooler's when the head does not
read it (``--pooling mean|cls``): the pooler is then unused, in PyTorch and in the exported graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

from docscore.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

BODY_PREFIXES = ("base_model.", "bert.", "encoder.", "body.", "model.", "transformer.", "backbone.", "roberta.",
                 "distilbert.", "electra.", "deberta.", "")
HEAD_NAMES = ("classifier", "head", "head.classifier", "fc", "linear", "out", "out_proj", "classification_head")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": {...}, "epoch": 3} and the like
SHOWN = 6


def read_state_dict(path: Path) -> dict:
    """Tensors by name, from ``.safetensors`` or a torch file read with ``weights_only=True``."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types on a bad header
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for a pickled module or custom class; others for a corrupt file
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); docscore never unpickles code. If it is a whole pickled "
            "model, save its weights instead: torch.save(model.state_dict(), PATH)") from e
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict) and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                log.info("%s: reading the state dict under %r", path, key)
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors; save "
                              "model.state_dict()")
    return obj


def _shown(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOWN]) + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def _split(state: dict, body_keys: dict) -> tuple[str, dict, dict]:
    """(body prefix, body tensors by body key, the rest): the prefix under which most keys fit the body."""
    def fit(prefix):
        return sum(1 for k in state if k.startswith(prefix) and k[len(prefix):] in body_keys)

    prefix = max(BODY_PREFIXES, key=fit)  # ties keep the earlier (more specific) prefix
    if fit(prefix) == 0:
        raise CheckpointError(f"no key of the state dict fits the body (its keys start {_shown(body_keys)}; the "
                              f"state dict has {_shown(state)}); check --body")
    body = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in body_keys}
    rest = {k: v for k, v in state.items() if not (k.startswith(prefix) and k[len(prefix):] in body_keys)}
    return prefix, body, rest


def _head(rest: dict, buffers: set, prefix: str) -> tuple[str, dict, list[str]]:
    """(head name, {"weight", "bias"}, unexpected keys): the single linear layer among the keys left over."""
    ignorable = {k for k in rest if k.startswith(prefix) and k[len(prefix):] in buffers}  # old position_ids
    left = {k: v for k, v in rest.items() if k not in ignorable}
    for name in HEAD_NAMES:
        w, b = left.get(f"{name}.weight"), left.get(f"{name}.bias")
        if w is not None and b is not None and w.ndim == 2 and b.ndim == 1:
            unexpected = [k for k in left if k not in (f"{name}.weight", f"{name}.bias")]
            return name, {"weight": w, "bias": b}, unexpected
    return "", {}, list(left)


def import_state_dict(path: Path, options) -> Path:
    """Build a :class:`~docscore.model.DocClassifier` from a seed-style state dict and save it as a checkpoint.

    Raises:
        CheckpointError: the state dict does not fit the body + a linear head (the keys are named).
        ConfigError: ``--body`` or ``--labels`` is missing, or the labels do not match the head.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from docscore import __version__
    from docscore.files import sha256_file
    from docscore.checkpoint import save_checkpoint
    from docscore.model import DocClassifier, default_max_length
    from docscore.spec import HeadConfig, ModelSpec

    if not options.body:
        raise ConfigError("a state dict carries no config: pass --body, the folder (or hub name) the body was "
                          "loaded from, for its config.json and tokenizer")
    if not options.labels:
        raise ConfigError("a state dict carries no label names: pass --labels A,B,C (logit order) or a file with "
                          "one label per line")
    try:
        config = AutoConfig.from_pretrained(options.body)
        tokenizer = AutoTokenizer.from_pretrained(options.body)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--body {options.body}: cannot read its config and tokenizer ({e}); pass the local "
                              "folder the body was loaded from") from e
    state = read_state_dict(path)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # an unused pooler (see below) is the same on every run: the checkpoint is reproducible
        body = AutoModel.from_config(config)
    expected = {k: tuple(v.shape) for k, v in body.state_dict().items()}
    prefix, body_state, rest = _split(state, expected)
    buffers = {name for name, _ in body.named_buffers()}
    head_name, head, unexpected = _head(rest, buffers, prefix)
    missing = [k for k in expected if k not in body_state]
    unused_pooler = options.pooling != "pooler" and missing and all(k.startswith("pooler.") for k in missing)
    mismatched = [f"{prefix}{k} {tuple(v.shape)} vs {expected[k]}" for k, v in body_state.items()
                  if tuple(v.shape) != expected[k]]
    problems = []
    if missing and not unused_pooler:
        problems.append(f"missing {len(missing)} body weights: {_shown(prefix + k for k in missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_shown(mismatched)}")
    if not head_name:
        problems.append(f"no linear head ({' / '.join(n + '.weight+bias' for n in HEAD_NAMES[:4])}, ...) among "
                        "the keys outside the body")
    elif head["weight"].shape[1] != config.hidden_size:
        problems.append(f"head {head_name}.weight is {tuple(head['weight'].shape)}, its input should be the body's "
                        f"hidden size {config.hidden_size}")
    if problems:
        raise CheckpointError(f"{path} does not fit a {type(body).__name__} body (--body {options.body}) + a linear "
                              f"head: {'; '.join(problems)}. Nothing was written")
    labels = tuple(options.labels)
    if head["weight"].shape[0] != len(labels):
        raise ConfigError(f"the head {head_name} has {head['weight'].shape[0]} outputs but --labels names "
                          f"{len(labels)} ({', '.join(labels)}); give one label per output, in logit order")
    if unused_pooler:
        log.warning("%s has no pooler weights (%s); --pooling %s does not read the pooler, so it stays unused",
                    path, ", ".join(missing), options.pooling)
    spec_head = HeadConfig(labels=labels, problem_type=options.problem_type, pooling=options.pooling)
    model = DocClassifier(body, spec_head)
    full = {f"body.{k}": v for k, v in body_state.items()}
    full.update({f"body.{k}": v for k, v in body.state_dict().items() if k in missing})  # only an unused pooler
    full.update({"head.classifier.weight": head["weight"], "head.classifier.bias": head["bias"]})
    model.load_state_dict(full, strict=True)  # exact: every parameter from the file (or an unused pooler)
    model.eval()
    max_length = options.max_length or default_max_length(config, tokenizer)
    spec = ModelSpec(spec_head, max_length, model.input_names, config.model_type)
    origin = {"kind": "state_dict", "source": str(path.absolute()), "sha256": sha256_file(path),
              "body": str(options.body), "key_prefixes": {"body": prefix, "head": f"{head_name}."},
              "docscore": __version__}
    out = save_checkpoint(model, tokenizer, options.output, spec, origin=origin)
    log.info("imported %s (%s* body, %s.* head) -> %s", path, prefix, head_name, out)
    return out
