"""A SetFit model folder → docscore checkpoint.

SetFit scores a text as ``head.predict_proba(body.encode(text))``: a sentence-transformers body (Transformer →
Pooling → optional Normalize, or ``normalize_embeddings``) and a scikit-learn head in ``model_head.pkl``. The
checkpoint is the same function: the Transformer's weights as the body, the pooling as ``pooling``, the
normalisation as ``normalize``, and the logistic regression as the head's linear layer:

- multinomial (3+ classes): ``softmax(W x + b)`` is the linear layer ``(W, b)`` under softmax;
- binary: ``[1 - σ(z), σ(z)]`` with ``z = w·x + b`` is ``softmax([0, z])``, so the rows ``(0, w)`` (for
  ``multi_class='multinomial'`` in old scikit-learn, ``softmax([-z, z])``: rows ``(-w, w)``);
- one-vs-rest over a multi-label indicator (``multi_target_strategy='one-vs-rest'``): ``σ(w_k·x + b_k)`` per
  label, a ``multi_label`` head.

``model_head.pkl`` is read by :mod:`docscore.importer.pickle_allowlist`: no scikit-learn object is built and no
code from the file runs. Refused, by name: SetFit's differentiable torch head (a pickled ``nn.Module``), one-vs-
rest over 3+ exclusive classes (its probabilities are normalised sigmoids, not a linear layer under softmax),
other estimators, Dense modules, pooling other than mean / CLS, default prompts and ``do_lower_case``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from docscore.errors import CheckpointError, ConfigError
from docscore.importer.pickle_allowlist import Recorded, load_allowlisted

log = logging.getLogger(__name__)

HEAD_FILE = "model_head.pkl"
LOGISTIC = "LogisticRegression"
ONE_VS_REST = "OneVsRestClassifier"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as e:
        raise CheckpointError(f"{path} is not readable JSON: {e}") from e


def _modules(src: Path) -> tuple[Path, str, bool]:
    """(Transformer folder, pooling, normalize) from ``modules.json``; anything but Transformer → Pooling →
    [Normalize] is refused."""
    modules_path = src / "modules.json"
    if not modules_path.is_file():
        raise CheckpointError(f"{src} has {HEAD_FILE} but no modules.json: not a SetFit model folder "
                              "(SetFitModel.save_pretrained writes both)")
    modules = sorted(json.loads(modules_path.read_text()), key=lambda m: int(m.get("idx", 0)))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise CheckpointError(f"{src}/modules.json chains {' -> '.join(kinds)}; docscore imports SetFit bodies "
                              "Transformer -> Pooling [-> Normalize] (no Dense or other modules)")
    pooling_cfg = _read_json(src / modules[1].get("path", "1_Pooling") / "config.json")
    if "pooling_mode" in pooling_cfg:  # sentence-transformers >= 6
        modes = pooling_cfg["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:
        modes = [k[len("pooling_mode_"):] for k, v in pooling_cfg.items() if k.startswith("pooling_mode_") and v]
    named = {"mean": "mean", "mean_tokens": "mean", "cls": "cls", "cls_token": "cls"}
    if len(modes) != 1 or modes[0] not in named:
        raise CheckpointError(f"{src}: the Pooling module uses {modes or 'no mode'}; docscore imports mean or CLS "
                              "pooling")
    return src / modules[0].get("path", ""), named[modes[0]], kinds[-1] == "Normalize"


def _linear_head(head: Recorded, path: Path) -> tuple[np.ndarray, np.ndarray, list, str]:
    """(W (L, d), b (L,), classes in logit order, problem type) of a recorded scikit-learn head."""
    name = head.kind.rsplit(".", 1)[-1]
    s = head.state
    if name == LOGISTIC:
        coef, intercept = np.asarray(s["coef_"], np.float64), np.asarray(s["intercept_"], np.float64)
        classes = list(s["classes_"])
        multi = s.get("multi_class")
        if len(classes) == 2 and coef.shape[0] == 1:
            sign = -1.0 if multi == "multinomial" else 0.0  # softmax([-z, z]) vs softmax([0, z])
            return (np.vstack([sign * coef, coef]), np.concatenate([sign * intercept, intercept]), classes,
                    "single_label")
        if len(classes) > 2 and coef.shape[0] == len(classes):
            if multi == "ovr" or (multi != "multinomial" and s.get("solver") == "liblinear"):
                raise CheckpointError(f"{path}: a one-vs-rest LogisticRegression over {len(classes)} classes "
                                      "(normalised sigmoids, not a linear layer under softmax); refit it "
                                      "multinomial (the default lbfgs solver) to import it")
            return coef, intercept, classes, "single_label"
        raise CheckpointError(f"{path}: LogisticRegression with coef_ {coef.shape} for {len(classes)} classes")
    if name == ONE_VS_REST:
        binarizer = s.get("label_binarizer_")
        multilabel = isinstance(binarizer, Recorded) and binarizer.state.get("y_type_") == "multilabel-indicator"
        estimators = list(s.get("estimators_") or [])
        if not multilabel:
            raise CheckpointError(f"{path}: a OneVsRestClassifier over exclusive classes (normalised sigmoids, "
                                  "not a linear layer under softmax); docscore imports it for multi-label targets")
        rows = []
        for e in estimators:
            if not (isinstance(e, Recorded) and e.kind.endswith(LOGISTIC) and np.asarray(e.state["coef_"]).shape[0] == 1):
                raise CheckpointError(f"{path}: OneVsRestClassifier holds {e!r}; docscore imports binary "
                                      "LogisticRegression estimators")
            if e.state.get("multi_class") == "multinomial":
                raise CheckpointError(f"{path}: a multinomial binary LogisticRegression inside OneVsRestClassifier")
            rows.append((np.asarray(e.state["coef_"], np.float64)[0], float(np.asarray(e.state["intercept_"])[0])))
        classes = list(s.get("classes_", range(len(rows))))
        return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]), classes, "multi_label"
    raise CheckpointError(f"{path} holds a {head.kind}; docscore imports LogisticRegression heads")


def _label_names(classes: list, setfit_labels, override) -> tuple[str, ...]:
    if override:
        if len(override) != len(classes):
            raise ConfigError(f"the head has {len(classes)} outputs but --labels names {len(override)} "
                              f"({', '.join(override)}); give one label per output, in logit order")
        return tuple(override)
    if setfit_labels and all(isinstance(c, (int, np.integer)) for c in classes):
        if all(0 <= int(c) < len(setfit_labels) for c in classes):
            return tuple(str(setfit_labels[int(c)]) for c in classes)
    return tuple(str(c) for c in classes)


def import_setfit(src: Path, options) -> Path:
    """Build a :class:`~docscore.model.DocClassifier` equal to SetFit's ``predict_proba`` and save it.

    Raises:
        CheckpointError: a part of the folder docscore cannot reproduce exactly (named), or a pickle global
            outside the allowlist.
        ConfigError: ``--labels`` does not match the head.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    from docscore import __version__
    from docscore.files import sha256_file
    from docscore.checkpoint import save_checkpoint
    from docscore.model import DocClassifier, default_max_length
    from docscore.spec import HeadConfig, ModelSpec

    if options.body:
        raise ConfigError("--body is for state dicts; a SetFit folder carries its own body")
    head_path = src / HEAD_FILE
    if not head_path.is_file():
        raise CheckpointError(f"{src} has no {HEAD_FILE}: a SetFit model without its head")
    setfit_cfg = _read_json(src / "config_setfit.json")
    st_cfg = _read_json(src / "config_sentence_transformers.json")
    if st_cfg.get("default_prompt_name"):
        raise CheckpointError(f"{src}: sentence-transformers prepends the default prompt "
                              f"{st_cfg['default_prompt_name']!r} to every text; docscore scores the text as it is")
    transformer_dir, pooling, normalize_module = _modules(src)
    bert_cfg = _read_json(transformer_dir / "sentence_bert_config.json")
    if bert_cfg.get("do_lower_case"):
        raise CheckpointError(f"{src}: sentence-transformers lower-cases texts before its tokenizer "
                              "(do_lower_case); docscore's bundle tokenizer would not")
    head = load_allowlisted(head_path)
    if not isinstance(head, Recorded):
        raise CheckpointError(f"{head_path} holds a {type(head).__name__}; docscore imports LogisticRegression heads")
    weight, bias, classes, problem = _linear_head(head, head_path)
    labels = _label_names(classes, setfit_cfg.get("labels"), options.labels)

    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # a pooler the file lacks is unused by mean/CLS pooling, and reproducible
            body, info = AutoModel.from_pretrained(str(transformer_dir), dtype=torch.float32,
                                                   output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{src}: cannot load the sentence-transformers body: {e}") from e
    missing = [k for k in info.get("missing_keys") or [] if not k.startswith("pooler.")]
    if missing or info.get("mismatched_keys"):
        raise CheckpointError(f"{transformer_dir}: the body's weights do not fit {type(body).__name__}: missing "
                              f"{missing} mismatched {info.get('mismatched_keys')}")
    if weight.shape[1] != body.config.hidden_size:
        raise CheckpointError(f"{head_path}: the head takes {weight.shape[1]} features but the body gives "
                              f"{body.config.hidden_size}")
    normalize = bool(normalize_module or setfit_cfg.get("normalize_embeddings"))
    spec_head = HeadConfig(labels=labels, problem_type=problem, pooling=pooling, normalize=normalize)
    model = DocClassifier(body, spec_head).eval()
    with torch.no_grad():
        model.head.classifier.weight.copy_(torch.from_numpy(weight))
        model.head.classifier.bias.copy_(torch.from_numpy(bias))
    max_length = (options.max_length or bert_cfg.get("max_seq_length")
                  or default_max_length(body.config, tokenizer))
    spec = ModelSpec(spec_head, int(max_length), model.input_names, body.config.model_type)
    origin = {"kind": "setfit", "source": str(src.absolute()), "head": head.kind,
              "head_sha256": sha256_file(head_path), "docscore": __version__}
    out = save_checkpoint(model, tokenizer, options.output, spec, origin=origin)
    log.info("imported SetFit %s (%s pooling%s, %s head, %d labels) -> %s", src, pooling,
             " + normalize" if normalize else "", head.kind.rsplit(".", 1)[-1], len(labels), out)
    return out
