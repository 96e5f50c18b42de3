"""Cut a stream of record batches into sort windows whose boundaries depend only on the rows.

Window boundaries must not depend on how Parquet happened to chunk the rows (read batch size, row groups, where
a resumed run started reading): the same rows must always be batched, padded and scored the same way, so a
resumed run writes byte-identical outputs.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa


def cut_windows(batches: Iterable[pa.RecordBatch | pa.Table], lengths: Callable[[pa.RecordBatch], np.ndarray],
                max_rows: int, max_chars: int) -> Iterator[pa.Table]:
    """Yield tables of consecutive rows: a window closes at ``max_rows`` rows or once its ``lengths`` (characters
    per row) reach ``max_chars``, whichever comes first; the last window holds what is left."""
    buf: list = []
    buf_rows = buf_chars = 0
    for batch in batches:
        lens = lengths(batch)
        start, n = 0, batch.num_rows
        while start < n:
            room = max_rows - buf_rows
            cum = np.cumsum(lens[start:start + room])
            hit = int(np.searchsorted(cum, max_chars - buf_chars, side="left"))
            if hit < len(cum):
                take, full = hit + 1, True
            else:
                take, full = len(cum), len(cum) == room
            buf.append(batch.slice(start, take))
            buf_rows += take
            buf_chars += int(cum[take - 1])
            start += take
            if full:
                yield _table(buf)
                buf, buf_rows, buf_chars = [], 0, 0
    if buf_rows:
        yield _table(buf)


def _table(pieces: list) -> pa.Table:
    tables = [pa.Table.from_batches([p]) if isinstance(p, pa.RecordBatch) else p for p in pieces]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
