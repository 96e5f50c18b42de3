"""Length-bucketed, token-budgeted inference batches over one window of sequences.

A sequence is always padded to a length derived from its own token count (:func:`padded_length`), never from
the sequences it happens to share a batch with: reductions over a padded sequence (attention softmax, pooling)
then see the same shapes whatever the batch, the token budget or the file layout. Batches only group sequences
of equal padded length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Sequences are padded to a multiple of this many tokens (capped at the bundle's max_length). Coarser buckets
# mean fewer, fuller batches; finer ones less padding. 8 costs ~3.5 padded tokens per sequence on average.
PAD_MULTIPLE = 8


def padded_length(n: int | np.ndarray, max_length: int, multiple: int = PAD_MULTIPLE):
    """The padded length of a sequence of ``n`` tokens: ``n`` rounded up to ``multiple``, at most
    ``max(n, max_length)``. A function of ``n`` and the bundle alone."""
    n = np.asarray(n, dtype=np.int64)
    up = -(-n // multiple) * multiple
    return np.minimum(up, np.maximum(n, max_length))


@dataclass(frozen=True)
class MicroBatch:
    """One inference call: ``index`` picks the window's sequences, each padded to ``length`` tokens."""

    index: np.ndarray  # (B,) positions into the window's sequences, in window order within the bucket
    length: int  # padded length T, the same for every sequence of this length bucket

    @property
    def slots(self) -> int:
        return len(self.index) * self.length


def plan_batches(lengths: np.ndarray, token_budget: int, max_rows: int, max_length: int,
                 multiple: int = PAD_MULTIPLE) -> list[MicroBatch]:
    """Group sequences by padded length (longest bucket first, input order inside a bucket) and cut each group
    into batches of at most ``token_budget`` padded tokens and ``max_rows`` rows. A sequence longer than the
    budget goes alone. The caller restores input order from ``MicroBatch.index``.
    """
    padded = padded_length(np.asarray(lengths, dtype=np.int64), max_length, multiple)
    order = np.argsort(-padded, kind="stable")
    sorted_pad = padded[order]
    batches = []
    i, n = 0, len(order)
    while i < n:
        length = int(sorted_pad[i])
        end = i + int(np.searchsorted(-sorted_pad[i:], -length, side="right"))  # end of this bucket
        rows = max(1, min(max_rows, token_budget // max(length, 1)))
        for start in range(i, end, rows):
            batches.append(MicroBatch(order[start:min(start + rows, end)], length))
        i = end
    return batches
