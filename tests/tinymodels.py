"""Tiny bodies for fast tests: configs for every supported architecture, built with a real tokenizer's vocab.

Plain helpers (not fixtures), imported by tests as ``from tinymodels import ...``; the fixtures live in conftest.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

# Tiny configs, one per architecture the model must support. vocab 30522 matches the MiniLM tokenizer.
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
ARCHITECTURES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2")
# Bodies whose attention depends on the input length: the exporter must handle them faithfully or refuse them.
LENGTH_DEPENDENT = ("big_bird", "longformer")


def tiny_body_config(arch: str):
    from transformers import (BertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, RobertaConfig,
                              XLMRobertaConfig)

    if arch == "bert":
        return BertConfig(**TINY)
    if arch == "distilbert":
        return DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    if arch == "roberta":
        return RobertaConfig(**TINY, max_position_embeddings=600, pad_token_id=0)
    if arch == "xlm-roberta":
        return XLMRobertaConfig(**TINY, max_position_embeddings=600, pad_token_id=0)
    if arch == "electra":
        return ElectraConfig(**TINY, embedding_size=32)
    if arch == "deberta-v2":
        return DebertaV2Config(**TINY, max_position_embeddings=512, relative_attention=True,
                               pos_att_type=["p2c", "c2p"], position_buckets=64)
    if arch == "big_bird":  # block sparse above (5 + 2 * 2) * 4 = 36 tokens, full attention at or below
        from transformers import BigBirdConfig

        return BigBirdConfig(**TINY, attention_type="block_sparse", block_size=4, num_random_blocks=2,
                             max_position_embeddings=512)
    if arch == "longformer":
        from transformers import LongformerConfig

        return LongformerConfig(**TINY, attention_window=8, max_position_embeddings=600, pad_token_id=0)
    raise ValueError(arch)


def build_tiny_model(arch="bert", pooling="mean", problem_type="single_label", labels=("billing", "shipping", "tech"),
                     hidden_dim=None, seed=0):
    """A DocClassifier with a tiny random body, deterministic for a given seed, in eval mode."""
    import torch
    from transformers import AutoModel

    from docscore.model import DocClassifier
    from docscore.spec import HeadConfig

    torch.manual_seed(seed)
    body = AutoModel.from_config(tiny_body_config(arch))
    head = HeadConfig(labels=labels, problem_type=problem_type, pooling=pooling, hidden_dim=hidden_dim)
    return DocClassifier(body, head).eval()
