"""Texts → token sequences: per-row checks, character clipping that provably keeps the same tokens, chunking,
and the per-row bound.

The clip (truncate mode): tokenising a 300-page document to keep its first 256 tokens wastes almost all of the
work, so texts are cut to ``budget`` characters first. The cut is only trusted when the token offsets prove it
cannot have changed the tokens kept: the clipped text must still fill ``max_length`` tokens, and after the last
kept token the clipped text must hold a space, a complete space-delimited word and another space. Tokenisers split
their input into words at spaces before the vocabulary model runs (WordPiece, byte-level BPE and Metaspace/Unigram
alike), and normalisers act per character, so every word before that complete word is tokenised exactly as in the
full text. Otherwise the text is encoded again with 4x the budget, and so on up to the row bound.

The row bound: at most ``max_chunks x max_length x ROW_CHARS_PER_TOKEN`` characters of one row are ever handed to
the tokenizer (:func:`row_char_bound`), so one huge row costs what ``max_chunks`` windows cost, never the whole
host. A text within the bound is tokenised as it always was (whole, or from a prefix proven equivalent), so every
row that is scored has exactly the tokens of its full text; a row beyond the bound gets a per-row error naming it:
in truncate mode when no cut within the bound can be proven (the text has no space after its first ``max_length``
tokens), in chunk mode whenever the text is longer (its first ``row_char_bound`` characters show whether it needs
more than ``max_chunks`` windows, which the error then says).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

# Only ASCII spaces are trusted as word boundaries: BERT's normaliser deletes some characters Python calls
# whitespace (e.g. \x1c-\x1f, \x0b), so a looser class could "see" a boundary the tokenizer does not.
_SAFE_TAIL = re.compile(r" +[^ ]+ ")

# Characters per token a row may average before it is refused: English WordPiece averages 4-5, code ~3, CJK ~1; a
# text averaging more than 16 is mostly spaces or very long "words" (base64, minified data).
ROW_CHARS_PER_TOKEN = 16

NULL_TEXT = "null text"
EMPTY_TEXT = "empty text"
INVALID_UTF8 = "invalid UTF-8 in binary text"


def _is_binary(typ: pa.DataType) -> bool:
    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_binary_view(typ) or (
        pa.types.is_dictionary(typ) and pa.types.is_binary(typ.value_type))


def _decode_binary(column) -> tuple[list, list]:
    """UTF-8 texts from a binary column (schema drift upstream often stores text as bytes); a value that is not
    valid UTF-8 is a per-row error, never a failed file."""
    texts, errors = [], []
    for b in column.to_pylist():
        if b is None:
            texts.append(None)
            errors.append(NULL_TEXT)
            continue
        try:
            t = b.decode("utf-8")
        except UnicodeDecodeError:
            texts.append(None)
            errors.append(INVALID_UTF8)
            continue
        texts.append(t)
        errors.append(EMPTY_TEXT if t == "" else None)
    return texts, errors


def text_values(column: pa.ChunkedArray | pa.Array, max_chars: int | None = None) -> tuple[list, list]:
    """Python texts and per-row errors for one text column.

    Args:
        max_chars: string texts longer than this come back cut to ``max_chars + 1`` characters (a longer text is
            over the row bound, and only its first ``max_chars`` are ever tokenised), so a huge row is not copied
            whole into Python.

    Returns:
        ``(texts, errors)``: ``texts[i]`` is a ``str`` or ``None``; ``errors[i]`` is ``None`` for a usable
        text, else ``"null text"``, ``"empty text"``, ``"invalid UTF-8 in binary text"`` (binary columns are
        decoded as UTF-8) or ``"non-string text: <arrow type>"``.
    """
    typ = column.type
    if _is_binary(typ):
        return _decode_binary(column)
    if pa.types.is_dictionary(typ) and pa.types.is_string(typ.value_type) or pa.types.is_string_view(typ):
        column = column.cast(pa.string())
        typ = column.type
    n = len(column)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        if max_chars is not None and n and (pc.max(pc.utf8_length(column)).as_py() or 0) > max_chars:
            column = pc.utf8_slice_codeunits(column, 0, max_chars + 1)
        texts = column.to_pylist()
        errors = [NULL_TEXT if t is None else EMPTY_TEXT if t == "" else None for t in texts]
        return texts, errors
    valid = pc.is_valid(column).to_pylist() if n else []
    errors = [f"non-string text: {typ}" if ok else NULL_TEXT for ok in valid]
    return [None] * n, errors


def char_lengths(column: pa.ChunkedArray | pa.Array, cap: int | None = None):
    """Characters per row (0 for null or non-string rows), optionally capped at ``cap``; a numpy int64 array."""
    import numpy as np

    typ = column.type
    if _is_binary(typ):  # bytes bound the characters: a window of binary texts only closes earlier
        lens = pc.fill_null(pc.binary_length(column.cast(pa.large_binary())), 0)
        out = np.asarray(lens.to_numpy(zero_copy_only=False), dtype=np.int64)
        return np.minimum(out, cap) if cap else out
    if pa.types.is_dictionary(typ) or pa.types.is_string_view(typ):
        try:
            column = column.cast(pa.string())
            typ = column.type
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.zeros(len(column), dtype=np.int64)
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        return np.zeros(len(column), dtype=np.int64)
    lens = pc.fill_null(pc.utf8_length(column), 0)
    out = np.asarray(lens.to_numpy(zero_copy_only=False) if hasattr(lens, "to_numpy") else lens, dtype=np.int64)
    return np.minimum(out, cap) if cap else out


def clip_is_safe(clipped: str, encoding, max_length: int) -> bool:
    """True when the tokens kept from ``clipped`` are provably those kept from any text it is a prefix of."""
    if len(encoding.ids) < max_length:
        return False  # the whole clipped text fit: the full text may hold more tokens that would be kept
    special = encoding.special_tokens_mask
    last = len(special) - 1
    while last >= 0 and special[last]:
        last -= 1
    if last < 0:
        return False
    end = encoding.offsets[last][1]
    return _SAFE_TAIL.search(clipped, end) is not None


def safe_point(text: str) -> int:
    """The index of the space just before the last complete space-delimited word of ``text`` (a word with a space
    on each side), or -1: a token of ``text`` ending at or before it is a token of every text ``text`` is a prefix
    of, in the same place (the argument of the module docstring)."""
    j = text.rfind(" ")
    while j > 0:
        k = text.rfind(" ", 0, j)
        if k < 0:
            return -1
        if k < j - 1:
            return k
        j = k
    return -1


@dataclass
class ClipStats:
    clipped: int = 0  # texts tokenised from a clipped prefix
    retried: int = 0  # texts whose first clip was not provably safe


def row_char_bound(max_chunks: int, max_length: int) -> int:
    """The most characters of one row handed to the tokenizer: ``max_chunks x max_length x ROW_CHARS_PER_TOKEN``."""
    return max_chunks * max_length * ROW_CHARS_PER_TOKEN


def _bound(max_chunks: int, max_length: int) -> str:
    return (f"{row_char_bound(max_chunks, max_length):,} characters (--max-chunks {max_chunks} x {max_length} tokens "
            f"x {ROW_CHARS_PER_TOKEN} characters)")


def too_many_chunks(max_chunks: int, max_length: int) -> str:
    """The per-row error of a chunk-mode row that needs more than ``max_chunks`` windows."""
    return (f"text needs more than --max-chunks {max_chunks} chunks of {max_length} tokens; raise --max-chunks or "
            "use --long-docs truncate")


def too_long_to_chunk(max_chunks: int, max_length: int) -> str:
    """The per-row error of a chunk-mode row longer than the row bound whose first part does not show the count."""
    return (f"text is longer than {_bound(max_chunks, max_length)}, the most chunk mode reads of a row; raise "
            "--max-chunks or use --long-docs truncate")


def no_cut_within(max_chunks: int, max_length: int) -> str:
    """The per-row error of a truncate-mode row whose first ``max_length`` tokens cannot be proven within the row
    bound."""
    return (f"the text's first {max_length} tokens cannot be proven within its first {_bound(max_chunks, max_length)}"
            ": no space-delimited word follows them; raise --max-chunks")


def encode_truncated(tokenizer, texts: list[str], max_length: int, budget: int | None,
                     stats: ClipStats | None = None, max_chars: int | None = None,
                     provable: bool | None = None) -> list:
    """Encode ``texts`` with truncation at ``max_length`` tokens, clipping each to ``budget`` characters first.

    Each encoding equals that of ``tokenizer.encode_batch(texts)`` token for token (see the module docstring);
    ``budget`` ``None`` or ``0`` encodes the full texts (callers pass 0 when :func:`tokenizer_splits_on_spaces` is
    false).

    Args:
        max_chars: no more than this many characters of a text are tokenised (clips grow 4x at a time up to it);
            a text longer than this whose kept tokens cannot be proven within its first ``max_chars`` characters
            gets ``None`` (over the row bound). ``None``: no bound.
        provable: whether a clip may be trusted when proven (default: when ``budget`` is given).
    """
    provable = bool(budget) if provable is None else provable
    if max_chars is None:
        limits = [budget, budget * 4, None] if budget else [None]
    else:
        limits = []
        limit = budget if provable and budget else max_chars
        while limit < max_chars:
            limits.append(limit)
            limit *= 4
        limits.append(max_chars)
    encodings = [None] * len(texts)
    todo = list(range(len(texts)))
    for limit in limits:
        if not todo:
            break
        batch = [texts[i] if limit is None or len(texts[i]) <= limit else texts[i][:limit] for i in todo]
        encs = tokenizer.encode_batch(batch)
        retry = []
        for i, piece, enc in zip(todo, batch, encs):
            if len(piece) == len(texts[i]) or provable and clip_is_safe(piece, enc, max_length):
                encodings[i] = enc
                if stats is not None and len(piece) < len(texts[i]):
                    stats.clipped += 1
            else:
                retry.append(i)
        if stats is not None and limit == budget:
            stats.retried += len(retry)
        todo = retry
    return encodings


def encode_chunked(tokenizer, probe, texts: list[str], max_length: int, overlap: int, max_chunks: int,
                   provable: bool) -> tuple[list, list]:
    """Encode ``texts`` into windows of ``max_length`` tokens overlapping by ``overlap`` (``tokenizer`` truncates
    with that stride), at most ``max_chunks`` per text, tokenising at most :func:`row_char_bound` characters of
    each.

    Args:
        probe: the same tokenizer without truncation: it counts the tokens of the first characters of a text
            over the bound (``provable`` says whether such a count can be trusted, see the module docstring).

    Returns:
        ``(encodings, errors)``: per text, its encoding (``encoding.overflowing`` holds the windows after the
        first), or ``None`` and why (:func:`too_many_chunks`, :func:`too_long_to_chunk`).
    """
    max_chars = row_char_bound(max_chunks, max_length)
    room = max_length - tokenizer.num_special_tokens_to_add(False)
    most_tokens = room + (max_chunks - 1) * (room - overlap)  # content tokens that fit max_chunks windows
    encodings, errors = [None] * len(texts), [None] * len(texts)
    within = [i for i, t in enumerate(texts) if len(t) <= max_chars]
    for i, enc in zip(within, tokenizer.encode_batch([texts[i] for i in within])):
        if 1 + len(enc.overflowing) > max_chunks:
            errors[i] = too_many_chunks(max_chunks, max_length)
        else:
            encodings[i] = enc
    over = [i for i, t in enumerate(texts) if len(t) > max_chars]
    pieces = [texts[i][:max_chars] for i in over]
    for i, piece, enc in zip(over, pieces, probe.encode_batch(pieces) if provable else [None] * len(over)):
        proven = 0
        if enc is not None:
            q = safe_point(piece)
            proven = sum(1 for (_, end), special in zip(enc.offsets, enc.special_tokens_mask)
                         if not special and end <= q)
        errors[i] = (too_many_chunks if proven > most_tokens else too_long_to_chunk)(max_chunks, max_length)
    return encodings, errors


def tokenizer_splits_on_spaces(tokenizer) -> bool:
    """Whether the tokenizer pre-splits words (the clip proof needs it); tokenizers without a pre-tokenizer
    run their vocabulary model over the whole text, so a cut could change merges anywhere."""
    return tokenizer.pre_tokenizer is not None


def num_content_tokens(encoding) -> int:
    return len(encoding.special_tokens_mask) - sum(encoding.special_tokens_mask)


def unk_id(tokenizer) -> int | None:
    """The id of the tokenizer's unknown token, or ``None`` when its model has none (byte-level BPE)."""
    token = getattr(tokenizer.model, "unk_token", None)
    return None if token is None else tokenizer.token_to_id(token)


def unk_fraction(pieces, unk: int | None) -> float:
    """Share of the content tokens (special tokens excluded) of ``pieces`` that are the unknown token.

    A text the vocabulary cannot read (emoji only, an unknown script) tokenises to ``[CLS] [UNK] [SEP]`` and
    still gets a confident-looking label; this number lets the reader see it. ``pieces`` are the encodings the
    model reads for one row (one, or a row's chunks).
    """
    content = unknown = 0
    for enc in pieces:
        for token, special in zip(enc.ids, enc.special_tokens_mask):
            if not special:
                content += 1
                unknown += unk is not None and token == unk
    return unknown / content if content else 0.0
