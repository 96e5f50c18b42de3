"""Generated archives for the batch tests (a plain module: the tests import it by name)."""

from __future__ import annotations

import random

import pyarrow as pa

WORDS = ("invoice refund shipping parcel delayed password reset login crash update account billing "
         "tracking damaged box order payment card declined server timeout error café naïve résumé "
         "日本語 données 🙂 well-known e-mail O'Brien 3.14 2024-01-05 https://example.com/a?b=c").split()


def make_text(rng: random.Random, words: int) -> str:
    seps = [" "] * 12 + ["  ", "\n", "\t", ", ", ". ", " \u00a0", "\n\n   "]
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(words)).strip()


def make_table(n: int, seed: int = 0, start_id: int = 0, long_every: int = 7) -> pa.Table:
    """``n`` rows of mixed length: mostly short, every ``long_every``-th a few hundred words."""
    rng = random.Random(seed)
    texts = [make_text(rng, rng.randint(300, 500) if i % long_every == 3 else rng.randint(1, 40)) for i in range(n)]
    return pa.table({"doc_id": pa.array(range(start_id, start_id + n), pa.int64()), "text": texts,
                     "source": [f"src-{i % 3}" for i in range(n)]})


def make_hive_archive(root, rows: int = 15):
    """Two hive partitions, ``date=2026-11-27/`` and ``date=2026-11-28/``, of ``rows`` rows each; returns ``root``."""
    import pyarrow.parquet as pq

    for day, seed in (("2026-11-27", 1), ("2026-11-28", 2)):
        (root / f"date={day}").mkdir(parents=True)
        pq.write_table(make_table(rows, seed=seed), root / f"date={day}" / "part-0.parquet")
    return root
