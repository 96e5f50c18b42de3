"""The row bound (``max_chunks``): a huge row gets a per-row error naming the bound, never the host's memory, and
every row that is scored keeps exactly the outputs of an unbounded run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch import ScoreOptions, Scorer
from docscore.batch.textprep import no_cut_within, row_char_bound, too_long_to_chunk, too_many_chunks
from docscore.errors import ConfigError

UNBOUNDED = 10**6  # max_chunks so large that no test row reaches it: the scorer as it was before the bound

OUTPUTS = ("label", "score", "score_billing", "score_shipping", "score_tech", "num_tokens", "num_chunks",
           "unk_fraction")


def with_rows(texts: list[str]) -> pa.Table:
    table = make_table(30, seed=11)
    extra = pa.table({"doc_id": pa.array(range(1000, 1000 + len(texts)), pa.int64()), "text": texts,
                      "source": ["extra"] * len(texts)})
    return pa.concat_tables([table, extra])


def assert_scored_rows_unchanged(bounded: pa.Table, unbounded: pa.Table) -> np.ndarray:
    """Rows without an error in ``bounded`` equal ``unbounded`` bit for bit; returns the refused rows' mask."""
    refused = np.array([e is not None for e in bounded.column("error").to_pylist()])
    assert unbounded.column("error").null_count == unbounded.num_rows
    for name in OUTPUTS:
        b = bounded.column(name).to_pylist()
        u = unbounded.column(name).to_pylist()
        assert [x for x, r in zip(b, refused) if not r] == [x for x, r in zip(u, refused) if not r], name
        assert all(x is None for x, r in zip(b, refused) if r), name  # a refused row has no scores
    return refused


def test_chunk_mode_refuses_rows_over_max_chunks_and_leaves_the_others_bit_identical(bundle, opts):
    opts = opts.replace(long_docs="chunk", chunk_overlap=8, max_chunks=4)
    bound = row_char_bound(4, 64)
    texts = ["the " * 40, "invoice refund " * 150, "the " * (bound // 2), " " * (2 * bound) + "x y", "the " * 10]
    table = with_rows(texts)
    bounded = Scorer(bundle, opts)(table)
    unbounded = Scorer(bundle, opts.replace(max_chunks=UNBOUNDED))(table)
    refused = assert_scored_rows_unchanged(bounded, unbounded)
    chunks = unbounded.column("num_chunks").to_pylist()
    lengths = [len(t) for t in table.column("text").to_pylist()]
    errors = bounded.column("error").to_pylist()
    for err, n, length in zip(errors, chunks, lengths):
        if err == too_many_chunks(4, 64):
            assert n > 4
        elif err is not None:
            assert err == too_long_to_chunk(4, 64) and length > bound
        else:
            assert n <= 4
    assert errors[-5:] == [None, too_many_chunks(4, 64), too_many_chunks(4, 64), too_long_to_chunk(4, 64), None]
    assert refused[:30].any() and not refused[:30].all()  # make_table's long rows need more than 4 windows
    assert errors[31] == "text needs more than --max-chunks 4 chunks of 64 tokens; raise --max-chunks or use " \
                         "--long-docs truncate"


def test_truncate_mode_scores_huge_rows_from_a_proven_prefix_and_refuses_unprovable_ones(bundle, opts):
    bound = row_char_bound(opts.max_chunks, 64)
    texts = ["invoice refund shipping " * (2 * bound // 24), "x" * (2 * bound), "日本語" * bound,
             "🙂" * (bound + 1), "日本語" * (bound // 3), "y" * (bound - 7) + " parcel"]  # the last two: within
    table = with_rows(texts)
    bounded = Scorer(bundle, opts)(table)
    unbounded = Scorer(bundle, opts.replace(max_chunks=UNBOUNDED))(table)
    refused = assert_scored_rows_unchanged(bounded, unbounded)
    err = no_cut_within(opts.max_chunks, 64)
    assert bounded.column("error").to_pylist()[-6:] == [None, err, err, err, None, None]
    assert not refused[:30].any()
    assert "first 64 tokens cannot be proven within its first 65,536 characters (--max-chunks 64 x 64 tokens" in err


def test_max_chunks_is_an_option_of_docscore_score(capsys):
    from docscore.cli import main

    with pytest.raises(SystemExit):
        main(["score", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max-chunks N the row bound" in help_text and "(default: 64)" in help_text
    assert ScoreOptions().max_chunks == 64
    with pytest.raises(ConfigError, match="max_chunks"):
        ScoreOptions(max_chunks=0)
    assert ScoreOptions(max_chunks=8).fingerprint("fp32")["max_chunks"] == 8  # it changes outputs


MEASURE = textwrap.dedent("""
    import json, resource, sys
    import pyarrow.parquet as pq
    from docscore.batch import ScoreOptions
    from docscore.batch.runner import score_files

    src, bundle, out, mode = sys.argv[1:5]
    score_files([src], bundle, out, ScoreOptions(id_column="doc_id", long_docs=mode, threads=1))
    table = pq.read_table(out + "/" + src.rsplit("/", 1)[-1])
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "errors": table.column("error").to_pylist()[-2:],
                      "scores": table.column("score").to_pylist()[-2:]}))
""")


@pytest.mark.slow
def test_a_20_mb_row_stays_within_twice_the_memory_of_a_normal_row(bundle, tmp_path):
    base = make_table(200, seed=3)
    words = ("invoice refund shipping parcel " * 700_000)[:20_000_000]

    def archive(name, extra):
        rows = pa.table({"doc_id": pa.array(range(10**6, 10**6 + len(extra)), pa.int64()), "text": extra,
                         "source": ["huge"] * len(extra)})
        path = tmp_path / name
        pq.write_table(pa.concat_tables([base, rows]), path)
        return path

    normal = archive("normal.parquet", ["invoice refund", "parcel late"])
    huge = archive("huge.parquet", [words, "x" * 20_000_000])  # 20 MB with spaces, 20 MB without

    def run(src, mode):
        out = tmp_path / f"out-{mode}-{src.stem}"
        p = subprocess.run([sys.executable, "-c", MEASURE, str(src), str(bundle), str(out), mode],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    for mode in ("chunk", "truncate"):
        ref, big = run(normal, mode), run(huge, mode)
        assert big["rss_mb"] < 2 * ref["rss_mb"], (mode, ref["rss_mb"], big["rss_mb"])
        if mode == "chunk":
            assert big["errors"] == [too_many_chunks(64, 64), too_long_to_chunk(64, 64)]
        else:
            assert big["errors"] == [None, no_cut_within(64, 64)] and big["scores"][0] is not None
