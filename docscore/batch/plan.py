"""Length-sorted, token-budgeted inference batches over one window of sequences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MicroBatch:
    """One ONNX Runtime call: ``index`` picks the window's sequences, padded to ``length`` tokens."""

    index: np.ndarray  # (B,) positions into the window's sequences, longest first
    length: int  # padded length T: the longest sequence in the batch

    @property
    def slots(self) -> int:
        return len(self.index) * self.length


def plan_batches(lengths: np.ndarray, token_budget: int, max_rows: int,
                 max_pad: float = 0.05) -> list[MicroBatch]:
    """Cut sequences sorted by length (longest first, ties in input order) into batches of at most
    ``token_budget`` padded tokens and ``max_rows`` rows. A sequence longer than the budget goes alone.

    A batch also ends before a sequence that is more than ``max_pad`` of the longest shorter than it, so no
    row is padded by more than that share: without it, a budget-sized batch of short texts spans lengths
    from 30 down to 10. The caller restores input order from ``MicroBatch.index``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    batches = []
    i, n = 0, len(order)
    while i < n:
        longest = int(sorted_len[i])
        rows = max(1, min(max_rows, token_budget // max(longest, 1), n - i))
        floor = longest - int(longest * max_pad)  # shortest length allowed in this batch
        # sorted_len is descending: count the leading rows of this slice that are >= floor
        rows = max(1, int(np.searchsorted(-sorted_len[i:i + rows], -floor, side="right")))
        batches.append(MicroBatch(order[i:i + rows], longest))
        i += rows
    return batches
