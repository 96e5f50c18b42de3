"""Shared fixtures: tiny bodies built from configs with the real MiniLM tokenizer, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tinymodels import ARCHITECTURES, ROOT, SAMPLES, TINY, build_tiny_model, tiny_body_config  # noqa: E402,F401

from skips import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: E402,F401


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The embedded default body (real all-MiniLM-L6-v2 weights and tokenizer)."""
    from docscore.model import embedded_body_path

    return Path(embedded_body_path())


@pytest.fixture(scope="session")
def hf_tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory, hf_tokenizer):
    """Build (and cache per session) a tiny checkpoint: factory(arch, pooling, problem_type) -> Path."""
    from docscore.checkpoint import save_checkpoint
    from docscore.spec import ModelSpec

    cache: dict = {}

    def make(arch="bert", pooling="mean", problem_type="single_label", max_length=64, hidden_dim=None) -> Path:
        key = (arch, pooling, problem_type, max_length, hidden_dim)
        if key not in cache:
            labels = ("score",) if problem_type == "regression" else ("billing", "shipping", "tech")
            model = build_tiny_model(arch, pooling, problem_type, labels, hidden_dim)
            spec = ModelSpec(model.head_config, max_length, model.input_names, model.body.config.model_type)
            out = tmp_path_factory.mktemp("ckpt") / f"{arch}-{pooling}-{problem_type}"
            save_checkpoint(model, hf_tokenizer, out, spec)
            # as `docscore train` does: the gate's texts travel with the model (here the samples' eval texts)
            from docscore import gate_texts
            from docscore.data import read_table

            gate_texts.write(out, read_table(SAMPLES / "eval.csv").column("text").to_pylist(), "samples/eval.csv")
            cache[key] = out
        return cache[key]

    return make


# --- export fixtures ---


@pytest.fixture(scope="session")
def tiny_bundle_factory(tmp_path_factory, tiny_checkpoint_factory):
    """Build (and cache per session) a gated bundle from a tiny checkpoint:
    factory(arch="bert", pooling="mean", problem_type="single_label", variants=("fp32",), **ExportOptions) -> Path.

    ``variants`` may name fp32, optimized, int8, fp16; fp16 is written unverified on a machine without CUDA.
    Tiny *random* bodies give near-tied logits, so int8 flips a few labels; unless ``tolerances`` says otherwise
    the int8 gate here asks for 90 % label agreement (real bodies are held to the default 99 %).
    """
    from docscore.export import ExportOptions, export_bundle

    cache: dict = {}

    def make(arch="bert", pooling="mean", problem_type="single_label", variants=("fp32",), **options) -> Path:
        key = (arch, pooling, problem_type, tuple(variants), repr(sorted(options.items())))
        if key not in cache:
            ckpt = tiny_checkpoint_factory(arch, pooling, problem_type)
            out = tmp_path_factory.mktemp("bundle") / f"{arch}-{pooling}-{problem_type}"
            if "int8" in variants:
                options.setdefault("tolerances", {"int8": {"min_label_agreement": 0.9}})
            opts = ExportOptions(output=out, optimize="optimized" in variants,
                                 quantize="int8" if "int8" in variants else None, fp16="fp16" in variants,
                                 **options)
            cache[key] = export_bundle(ckpt, opts)
        return cache[key]

    return make
