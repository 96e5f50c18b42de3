"""Discovery of local inputs: symlink loops end, each real file is taken once, the walk is bounded and says what it
is doing; hive keys of a mixed lake read as null in files outside their folders."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_data import make_hive_archive, make_table

from docscore.batch import inputs
from docscore.batch.inputs import discover, is_hidden
from docscore.errors import InputDataError

PATTERNS = ["**/*.parquet", "*.parquet", "*/*.parquet", "**", "date=*/**/*.parquet", "**/sub/*.parquet",
            "?.parquet", "[ab]*.parquet", "da**/x.parquet"]


def tree(root: Path) -> Path:
    for rel in ("a.parquet", "b.parquet", "a-b.parquet", "date=1/x.parquet", "date=1/sub/y.parquet",
                "_tmp/z.parquet", ".h/q.parquet", "c/d.parquet", "date=1/n.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def globbed(root: Path, pattern: str) -> list[tuple[str, str]]:
    """What ``glob.glob`` finds (files, hidden paths skipped), as (path, rel) pairs."""
    found = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if Path(p).is_file())
    pairs = [(str(p), p.relative_to(root).as_posix()) for p in found]
    return [(p, r if r.endswith(".parquet") else r + ".parquet") for p, r in pairs if not is_hidden(r)]


def test_a_glob_across_symlink_loops_finds_what_it_finds_without_them(tmp_path):
    lake = tree(tmp_path / "lake")
    expected = {pattern: globbed(lake, pattern) for pattern in PATTERNS}  # no links yet
    os.symlink("..", lake / "date=1" / "loop")  # back to the lake (one loop: today's glob repeats files)
    for pattern in PATTERNS:
        assert [(str(s.path), s.rel) for s in discover([str(lake / pattern)])] == expected[pattern], pattern
    assert [s.rel for s in discover([str(lake)])] == [r for _, r in expected["**/*.parquet"]]


def test_two_symlink_loops_do_not_hang_discovery(tmp_path):
    lake = tree(tmp_path / "lake")
    os.symlink("..", lake / "date=1" / "loop")
    os.symlink("../..", lake / "c" / "up")  # to the lake's parent, which holds the lake: a second loop, and the
    # paths through two loops grow exponentially with depth
    code = textwrap.dedent(f"""
        from docscore.batch.inputs import discover
        print(len(discover([{str(lake / '**' / '*.parquet')!r}])))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["6"]


def test_a_file_reached_through_two_paths_is_taken_once_at_its_first_path_in_sorted_order(tmp_path):
    lake = tmp_path / "lake"
    (lake / "b").mkdir(parents=True)
    pq.write_table(make_table(5), lake / "b" / "real.parquet")
    os.symlink("b", lake / "a")  # a symlinked folder, sorted before its target
    os.link(lake / "b" / "real.parquet", lake / "c.parquet")  # a hard link
    os.symlink("b/real.parquet", lake / "d.parquet")  # a file symlink
    for item in (str(lake), str(lake / "**" / "*.parquet")):
        shards = discover([item])
        assert [s.rel for s in shards] == ["a/real.parquet"], item
        assert shards[0].source == str((lake / "b" / "real.parquet").resolve())


def test_a_walk_over_its_bound_fails_in_one_line_and_a_long_walk_logs_progress(tmp_path, monkeypatch, caplog):
    lake = tmp_path / "lake"
    for i in range(30):
        (lake / f"p{i % 3}").mkdir(parents=True, exist_ok=True)
        (lake / f"p{i % 3}" / f"f{i}.parquet").write_bytes(b"")
    with pytest.raises(InputDataError) as e:
        discover([str(lake)], max_entries=20)
    assert "visited more than 20 entries" in str(e.value) and "narrower directory or glob" in str(e.value)
    assert "\n" not in str(e.value)
    assert inputs.MAX_DISCOVERY_ENTRIES >= 1_000_000  # the documented default bound
    monkeypatch.setattr(inputs, "PROGRESS_EVERY", 10)
    with caplog.at_level(logging.INFO, logger="docscore.batch.inputs"):
        assert len(discover([str(lake / "**" / "*.parquet")])) == 30
    assert sum("entries visited" in r.getMessage() for r in caplog.records) == 3  # 33 entries


def test_a_symlink_loop_in_a_glob_scores_each_row_once(bundle, opts, tmp_path):
    from docscore.batch.runner import score_files

    lake = tmp_path / "lake"
    (lake / "sub").mkdir(parents=True)
    pq.write_table(make_table(20, seed=1), lake / "a.parquet")
    pq.write_table(make_table(10, seed=2, start_id=100), lake / "sub" / "b.parquet")
    os.symlink("..", lake / "sub" / "loop")
    summary = score_files([str(lake / "**" / "*.parquet")], bundle, tmp_path / "out", opts)
    assert summary.ok and summary.rows == 30
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet")) == \
        ["a.parquet", "sub/b.parquet"]


def test_passthrough_of_a_hive_key_gives_null_in_files_outside_its_folders(bundle, opts, tmp_path):
    from docscore.batch.runner import score_files

    lake = make_hive_archive(tmp_path / "lake", rows=6)
    pq.write_table(make_table(4, seed=9, start_id=500), lake / "root.parquet")  # at the root: no date folder
    shards = {s.rel: s for s in discover([str(lake)])}
    assert shards["root.parquet"].partitions == (("date", None),)
    assert shards["date=2026-11-27/part-0.parquet"].partitions == (("date", "2026-11-27"),)
    out = tmp_path / "out"
    summary = score_files([str(lake)], bundle, out, opts.replace(passthrough=("date",)))
    assert summary.ok and summary.files_failed == 0 and summary.rows == 16
    assert pq.read_table(out / "root.parquet").column("date").to_pylist() == [None] * 4
    assert pq.read_table(out / "date=2026-11-28" / "part-0.parquet").column("date").to_pylist() == \
        ["2026-11-28"] * 6
    # a passthrough column that is no hive key of the run still fails the files lacking it, naming it
    summary = score_files([str(lake)], bundle, tmp_path / "out2", opts.replace(passthrough=("date", "nope")))
    assert summary.files_failed == 3 and all("'nope'" in f["error"] for f in summary.failed)


def test_a_ray_piece_of_a_root_file_reads_the_runs_hive_keys_as_null(tmp_path):
    from docscore.batch.ray.pieces import Piece, read_piece

    lake = make_hive_archive(tmp_path / "lake", rows=3)
    pq.write_table(make_table(4, seed=9), lake / "root.parquet")
    keys = discover([str(lake)])[0].lake_keys
    assert keys == ("date",)
    got = read_piece(Piece(0, str(lake / "root.parquet"), "root.parquet", 0, 4, lake_keys=keys), ["doc_id", "date"],
                     4)
    assert got.column("date").to_pylist() == [None] * 4
