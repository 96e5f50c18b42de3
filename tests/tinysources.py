"""Models as other tools write them, tiny and built from configs with the real MiniLM tokenizer: Hugging Face
``*ForSequenceClassification`` folders, the seed's ``CustomModelWithHead``, SetFit folders.

Plain helpers (not fixtures), imported by tests as ``from tinysources import ...``. Weights are initialised 10x
wider than transformers' default (``initializer_range`` 0.2) so a tiny random model gives spread-out
probabilities, not near-ties: a label agreement of 100 % then means something.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torch import nn

from tinymodels import SAMPLES, TINY, tiny_body_config

HF_ARCHITECTURES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert")
WIDE_INIT = 0.2
LABELS = ("billing", "shipping", "tech")


def sample_texts(name: str = "eval.csv") -> list[str]:
    with open(SAMPLES / name, newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def sample_rows(name: str = "train.csv") -> tuple[list[str], list[str]]:
    with open(SAMPLES / name, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def hf_config(arch: str, problem_type: str = "single_label_classification", labels=LABELS):
    """A tiny config of ``arch`` for a sequence classifier with ``labels`` and ``problem_type``."""
    if arch == "modernbert":
        from transformers import ModernBertConfig

        # local_attention 16 < the 64-token max_length of the tests: the sliding-window layers are exercised.
        config = ModernBertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, pad_token_id=0, cls_token_id=101, sep_token_id=102,
                                  bos_token_id=101, eos_token_id=102, local_attention=16,
                                  global_attn_every_n_layers=2)
    else:
        config = tiny_body_config(arch)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = problem_type
    config.initializer_range = WIDE_INIT
    return config


def save_hf_classifier(folder: Path, arch: str, tokenizer, problem_type: str = "single_label_classification",
                       labels=LABELS, seed: int = 0) -> Path:
    """A ``*ForSequenceClassification`` folder as ``save_pretrained`` writes it (model + tokenizer)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(hf_config(arch, problem_type, labels))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def save_body(folder: Path, arch: str, tokenizer, seed: int = 0, **overrides) -> Path:
    """A pretrained-body folder (``AutoModel`` + tokenizer), as the seed's ``from_pretrained`` expects."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    config = tiny_body_config(arch)
    config.initializer_range = WIDE_INIT
    for k, v in overrides.items():
        setattr(config, k, v)
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


class CustomModelWithHead(nn.Module):
    """The seed document's module, verbatim but for a wider head init (see the module docstring)."""

    def __init__(self, pretrained_model_name, num_labels):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name)
        self.base_model = AutoModel.from_pretrained(pretrained_model_name)
        self.classifier = nn.Linear(self.base_model.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=1.0)
        self.dropout = nn.Dropout(0.1)

    def forward(self, input_ids, attention_mask):
        outputs = self.base_model(input_ids=input_ids, attention_mask=attention_mask)
        pooled_output = outputs.pooler_output
        pooled_output = self.dropout(pooled_output)
        logits = self.classifier(pooled_output)
        return logits


def save_setfit(folder: Path, body_dir: Path, *, normalize: bool = True, pooling: str = "mean",
                binary: bool = False, multi_label: bool = False, max_seq_length: int = 64) -> Path:
    """A SetFit folder as ``SetFitModel.save_pretrained`` writes it: sentence-transformers body (Transformer ->
    Pooling [-> Normalize]) + a scikit-learn LogisticRegression head fitted on the samples' embeddings."""
    import numpy as np
    from sentence_transformers import SentenceTransformer, models
    from setfit import SetFitModel
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    transformer = models.Transformer(str(body_dir), max_seq_length=max_seq_length)
    dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    modules = [transformer, models.Pooling(dim(), pooling)]
    if normalize:
        modules.append(models.Normalize())
    body = SentenceTransformer(modules=modules, device="cpu")
    texts, labels = sample_rows("train.csv")
    embeddings = body.encode(texts)
    names = sorted(set(labels))
    if multi_label:  # two overlapping targets: "money" (billing, account) and "delivery" (shipping)
        targets = np.array([[label in ("billing", "account"), label == "shipping"] for label in labels], dtype=int)
        head = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(embeddings, targets)
        setfit_labels = ["money", "delivery"]
    elif binary:
        head = LogisticRegression(max_iter=2000).fit(embeddings, [label == "billing" for label in labels])
        setfit_labels = None
    else:
        head = LogisticRegression(max_iter=2000).fit(embeddings, [names.index(label) for label in labels])
        setfit_labels = names
    model = SetFitModel(model_body=body, model_head=head, labels=setfit_labels,
                        multi_target_strategy="one-vs-rest" if multi_label else None)
    model.save_pretrained(str(folder))
    return folder


__all__ = ["HF_ARCHITECTURES", "LABELS", "TINY", "hf_config", "sample_rows", "sample_texts", "save_body",
           "save_hf_classifier", "save_setfit", "CustomModelWithHead"]


def fit_logistic_head(features, labels):
    """(weight (L, d), bias (L,), names) of a multinomial logistic regression on ``features`` (numpy)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    names = sorted(set(labels))
    lr = LogisticRegression(max_iter=3000).fit(features, [names.index(x) for x in labels])
    return np.asarray(lr.coef_, np.float32), np.asarray(lr.intercept_, np.float32), names


def save_minilm_classifier(folder: Path, minilm_dir: Path) -> Path:
    """The real MiniLM body as a BertForSequenceClassification whose classifier is fitted (logistic regression on
    its pooler output) to the samples' training labels: a model with real activations and real label spread, as a
    Hugging Face Trainer run would leave it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    texts, labels = sample_rows("train.csv")
    names = sorted(set(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir), num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, problem_type="single_label_classification").eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output.numpy()
    weight, bias, _ = fit_logistic_head(pooled, labels)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
