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


# --- the row bound (max_chunks) ---------------------------------------------------------------------------------


def boundary_texts(bound: int) -> list[str]:
    """Texts at and around the row bound that a naive cut would get wrong: no spaces, CJK, emoji, one very long
    word, a word straddling the bound, the only space-delimited word ending exactly at the bound."""
    words = "invoice refund shipping " * (bound // 8)
    texts = ["a" * bound, "a" * (bound + 1), "日" * (bound + 1), "🙂" * (2 * bound), "日本語 " * bound,
             "🙂 " * bound, "x" * (3 * bound) + " tail", " " * (bound - 3) + "late start"]
    for n in (bound - 1, bound, bound + 1, bound + 2):
        texts.append(words[:n])
        texts.append(" " * (n - 25) + "internationalization" + " " * 5)  # few tokens, then spaces up to n
    texts.append("ab " * (bound // 3 - 4) + "supercalifragilisticexpialidocious" * 3 + " end ")  # word over the cut
    texts.append("ab " * (bound // 3 - 1) + "x")  # the last complete word ends just before the bound
    texts.append("日本語のテキスト" * (bound // 4))  # CJK without a single space, over the bound
    for into in (-3, 0, 1, 9, 19, 21):  # the 62nd content token, "international", ends near the bound
        pad = " " * (bound - 2 * 61 - into)
        texts.append(pad + "a " * 61 + "internationalization more words here " * 3)
    return texts


@pytest.mark.parametrize("max_chunks", [1, 2])
@pytest.mark.parametrize("clip", [True, False])
def test_the_row_bound_keeps_exactly_the_tokens_of_the_full_text(tokenizer, max_chunks, clip):
    from docscore.batch.textprep import row_char_bound

    tok, max_length = tokenizer
    bound = row_char_bound(max_chunks, max_length)
    rng = random.Random(max_chunks)
    texts = boundary_texts(bound) + [random_text(rng) for _ in range(200)]
    cut, _ = text_values(pa.array(texts), max_chars=bound)  # what the scorer hands over: at most bound + 1 chars
    assert all(len(c) == min(len(t), bound + 1) and t.startswith(c) for c, t in zip(cut, texts))
    stats = ClipStats()
    bounded = encode_truncated(tok, cut, max_length, 8 * max_length if clip else 0, stats, max_chars=bound,
                               provable=True)
    full = tok.encode_batch(texts)
    over = 0
    for text, b, f in zip(texts, bounded, full):
        if b is None:
            assert len(text) > bound, text[:80]  # only a text over the bound may be refused
            over += 1
        else:
            assert b.ids == f.ids and b.type_ids == f.type_ids, text[:80]
    assert over >= 4  # no spaces, CJK, emoji, the long word
    assert sum(len(t) > bound for t in texts) > over  # texts over the bound that could be proven are scored


def test_without_a_pre_tokenizer_only_texts_within_the_bound_are_encoded(tokenizer):
    tok, max_length = tokenizer
    texts = ["word " * 100, "word " * 300, "x" * 2000]
    out = encode_truncated(tok, texts, max_length, 0, max_chars=1024, provable=False)
    assert out[0].ids == tok.encode(texts[0]).ids
    assert out[1] is None and out[2] is None


@pytest.fixture(scope="module")
def chunker(bundle):
    b = load_bundle(bundle)
    tok = b.tokenizer(truncate=True)
    tok.enable_truncation(b.spec.max_length, stride=8)
    return tok, b.tokenizer(truncate=False), b.spec.max_length


def windows(enc) -> list[list[int]]:
    return [enc.ids] + [o.ids for o in enc.overflowing]


def test_chunks_within_the_bound_equal_full_tokenisation_and_over_it_are_refused_naming_it(chunker):
    from docscore.batch.textprep import (encode_chunked, row_char_bound, too_long_to_chunk, too_many_chunks)

    tok, probe, max_length = chunker
    max_chunks = 4
    bound = row_char_bound(max_chunks, max_length)
    rng = random.Random(7)
    # the last: 200 tokens, then one word WordPiece reads as a single [UNK] (over 100 characters) whose first
    # characters alone would be ~100 tokens: a count that trusted the cut would claim more than max_chunks windows
    unk_tail = " " * (bound - 100 - 800) + "the " * 200 + "q" * 5000 + " end"
    texts = boundary_texts(bound) + [random_text(rng) for _ in range(150)] + [unk_tail, "the " * 2000,
                                                                                " " * 5000 + "x y z"]
    cut, _ = text_values(pa.array(texts), max_chars=bound)
    encs, errors = encode_chunked(tok, probe, cut, max_length, 8, max_chunks, provable=True)
    full = tok.encode_batch(texts)
    seen = set()
    for text, enc, err, f in zip(texts, encs, errors, full):
        n = len(windows(f))
        if err is None:
            assert len(text) <= bound and windows(enc) == windows(f), text[:80]  # scored: exactly as today
            assert n <= max_chunks
        elif err == too_many_chunks(max_chunks, max_length):
            assert n > max_chunks, text[:80]  # never claimed without proof
        else:
            assert err == too_long_to_chunk(max_chunks, max_length) and len(text) > bound
        seen.add(err if err is None else err.split()[1])
        if len(text) <= bound:
            assert (err is None) == (n <= max_chunks)  # within the bound the count is exact
    assert seen == {None, "needs", "is"}
    assert errors[-3] == too_long_to_chunk(max_chunks, max_length) and len(windows(full[-3])) <= max_chunks
    assert errors[-2] == too_many_chunks(max_chunks, max_length)  # proven from its first bound characters
    assert errors[-1] == too_long_to_chunk(max_chunks, max_length)  # mostly spaces: nothing to prove


def test_max_chunks_windows_fit_exactly_and_one_token_more_is_refused(chunker):
    from docscore.batch.textprep import encode_chunked, too_many_chunks

    tok, probe, max_length = chunker
    room = max_length - tok.num_special_tokens_to_add(False)
    for max_chunks in (1, 2, 5):
        most = room + (max_chunks - 1) * (room - 8)
        fits, more = "the " * most, "the " * (most + 1)
        assert len(tok.encode(fits).overflowing) + 1 == max_chunks
        encs, errors = encode_chunked(tok, probe, [fits, more], max_length, 8, max_chunks, provable=True)
        assert errors == [None, too_many_chunks(max_chunks, max_length)]
        assert windows(encs[0]) == windows(tok.encode(fits))


def test_text_values_cuts_only_texts_over_max_chars():
    texts, errors = text_values(pa.array(["short", "日本語テキスト", None, "x" * 10]), max_chars=5)
    assert texts == ["short", "日本語テキス", None, "xxxxxx"] and errors == [None, None, "null text", None]
    assert text_values(pa.array(["abc", "de"]), max_chars=5)[0] == ["abc", "de"]
