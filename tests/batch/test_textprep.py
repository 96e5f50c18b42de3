"""Clip-equivalence of the character clip, and per-row text checks."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from docscore.batch.textprep import ClipStats, clip_is_safe, encode_truncated, text_values
from docscore.bundle import load_bundle

from batch_data import WORDS

# Texts built to trip a naive clip: long words, punctuation runs, CJK (one token per char), emoji,
# combining accents, whitespace that BERT deletes (\x1c) or keeps (\xa0, \u3000), runs of spaces and tabs.
ODD = ["supercalifragilisticexpialidocious", "internationalization", "...!!!", "日本語のテキスト", "🙂🙂🙂",
       "e\u0301te\u0301", "\x1c", "\u00a0", "\u3000", "ﬁﬂ", "\u200b", "a-b-c-d-e-f", "1234567890", "x"]
SEPS = [" ", " ", " ", "  ", "\t", "\n", "     ", "", "\x1c", "\u00a0"]


def random_text(rng: random.Random) -> str:
    n = rng.choice([5, 50, 200, 400, 1200])
    pool = list(WORDS) + ODD
    return "".join(rng.choice(pool) + rng.choice(SEPS) for _ in range(n))


@pytest.fixture(scope="module")
def tokenizer(bundle):
    b = load_bundle(bundle)
    return b.tokenizer(truncate=True), b.spec.max_length


@pytest.mark.parametrize("chars_per_token", [1, 2, 3, 8])
def test_clip_keeps_exactly_the_tokens_of_the_full_text(tokenizer, chars_per_token):
    tok, max_length = tokenizer
    rng = random.Random(chars_per_token)
    texts = [random_text(rng) for _ in range(300)]
    texts += ["word " * 500, " " * 3000 + "late start", "a" * 5000, "日" * 2000, "x\x1c" * 1000]
    budget = chars_per_token * max_length
    stats = ClipStats()
    clipped = encode_truncated(tok, texts, max_length, budget, stats)
    full = tok.encode_batch(texts)
    for text, c, f in zip(texts, clipped, full):
        assert c.ids == f.ids, text[:80]
        assert c.type_ids == f.type_ids
    assert stats.clipped > 0  # the clip was really used, not always the fallback
    if chars_per_token <= 2:
        assert stats.retried > 0  # tight budgets exercise the fallback


def test_a_naive_clip_would_change_tokens_and_the_check_catches_it(tokenizer):
    tok, max_length = tokenizer
    # max_length - 2 content tokens of "ab", then a long word straddling the cut
    text = "ab " * (max_length - 3) + "internationalization" * 3 + " tail words here"
    cut = len("ab " * (max_length - 3)) + 5
    naive = tok.encode(text[:cut])
    assert naive.ids != tok.encode(text).ids  # cutting inside the word changes the last kept token
    assert not clip_is_safe(text[:cut], naive, max_length)
    assert encode_truncated(tok, [text], max_length, cut)[0].ids == tok.encode(text).ids


def test_text_values_reports_null_empty_and_non_string():
    texts, errors = text_values(pa.chunked_array([pa.array(["hi", None, ""])]))
    assert texts == ["hi", None, ""]
    assert errors == [None, "null text", "empty text"]
    _, errors = text_values(pa.array([1, None, 3], pa.int64()))
    assert errors == ["non-string text: int64", "null text", "non-string text: int64"]
    texts, errors = text_values(pa.array(["a", "b"]).dictionary_encode())
    assert texts == ["a", "b"] and errors == [None, None]
    texts, errors = text_values(pa.array([b"x", b"\xff", None, "é".encode()], pa.binary()))  # decoded as UTF-8
    assert texts == ["x", None, None, "é"] and errors == [None, "invalid UTF-8 in binary text", "null text", None]


def test_unk_fraction_counts_unknown_content_tokens_only(bundle):
    from docscore.batch.textprep import unk_fraction, unk_id

    tok = load_bundle(bundle).tokenizer(truncate=True)
    unk = unk_id(tok)
    assert unk is not None

    def frac(text):
        return unk_fraction([tok.encode(text)], unk)

    assert frac("my invoice is wrong") == 0.0
    assert frac("🙂🙂🙂 🎉") == 1.0  # [CLS] [UNK] [UNK] [SEP]: specials do not count
    assert frac("x" * 5000) == 1.0  # one word longer than WordPiece reads
    assert frac("hello 🙂") == 0.5
    assert unk_fraction([tok.encode("hello 🙂"), tok.encode("🙂 🙂")], unk) == 0.75  # a row's chunks together
    assert unk_fraction([tok.encode("hello")], None) == 0.0  # a vocabulary without an unknown token
