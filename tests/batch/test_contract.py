"""The scoring contract: a row's outputs depend only on its text, the bundle and the options that change meaning.

For every CPU variant the tiny bundle holds (fp32 and static int8): batching options, threads, file layout, the
engine (local / Ray with 2 workers) and a SIGKILL + resume must give byte-identical output files; another file layout
gives the same rows, bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch import ScoreOptions, score_files

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("fp32", "int8")


@pytest.fixture(scope="module")
def two_variant_bundle(tiny_bundle_factory) -> Path:
    return tiny_bundle_factory(variants=("fp32", "int8"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "archive"
    root.mkdir()
    pq.write_table(make_table(120, seed=31), root / "a.parquet", row_group_size=32)
    pq.write_table(make_table(50, seed=32, start_id=1000), root / "b.parquet")
    return root


@pytest.fixture(scope="module")
def relaid(archive, tmp_path_factory) -> Path:
    """The same rows in another file layout: shuffled across three files."""
    rows = pa.concat_tables([pq.read_table(p) for p in sorted(archive.glob("*.parquet"))])
    root = tmp_path_factory.mktemp("relaid") / "archive"
    root.mkdir()
    order = list(range(rows.num_rows))[::-1]
    rows = rows.take(order)
    for i, part in enumerate((rows.slice(0, 17), rows.slice(17, 90), rows.slice(107))):
        pq.write_table(part, root / f"part-{i}.parquet")
    return root


BASE = dict(id_column="doc_id", threads=1, sort_window=16, token_budget=512, checkpoint_rows=40)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def rows_by_id(out: Path) -> dict:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])
    return {r["doc_id"]: r for r in table.to_pylist()}


@pytest.fixture(scope="module")
def reference(two_variant_bundle, archive, tmp_path_factory) -> dict:
    refs = {}
    for v in VARIANTS:
        out = tmp_path_factory.mktemp(f"ref-{v}") / "out"
        score_files([archive], two_variant_bundle, out, ScoreOptions(variant=v, **BASE))
        refs[v] = out
    return refs


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("changes", [{"token_budget": 64}, {"token_budget": 8192, "sort_window": 2048},
                                     {"max_batch_rows": 1}, {"sort_window": 3}, {"threads": 2},
                                     {"read_batch_rows": 7}])
def test_batching_and_threads_do_not_change_a_bit(variant, changes, two_variant_bundle, archive, reference,
                                                 tmp_path):
    """Byte-identical output files: every value bit for bit, and row groups cut at fixed row counts, never where a
    batch or a sort window ended."""
    out = tmp_path / "out"
    score_files([archive], two_variant_bundle, out, ScoreOptions(variant=variant, **{**BASE, **changes}))
    assert outputs(out) == outputs(reference[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_file_layout_and_checkpoint_size_do_not_change_a_row(variant, two_variant_bundle, relaid, reference,
                                                             tmp_path):
    out = tmp_path / "out"
    score_files([relaid], two_variant_bundle, out, ScoreOptions(variant=variant, **{**BASE, "checkpoint_rows": 13}))
    assert rows_by_id(out) == rows_by_id(reference[variant])


def test_variants_differ_so_the_checks_above_can_fail(reference):
    a, b = rows_by_id(reference["fp32"]), rows_by_id(reference["int8"])
    assert any(a[k]["score"] != b[k]["score"] for k in a if a[k]["error"] is None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kill_and_resume_is_byte_identical(variant, two_variant_bundle, archive, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "docscore", "score", str(archive), "--model", str(two_variant_bundle), "--output",
           str(out), "--id-column", "doc_id", "--threads", "1", "--checkpoint-rows", "40", "--sort-window", "16",
           "--token-budget", "512", "--variant", variant, "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": "part_committed:2"},
                            capture_output=True, text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert outputs(out) == outputs(reference[variant])


def test_ray_with_two_workers_is_bit_identical(two_variant_bundle, archive, reference, tmp_path):
    """Byte-identical to the local run: both engines commit through the same committer."""
    pytest.importorskip("ray")
    from docscore.batch.ray import RayOptions, ray_connection, score_files_ray

    with ray_connection(RayOptions(num_cpus=2, tmp_dir=tempfile.mkdtemp(prefix="dsray-"))):
        for v in VARIANTS:
            out = tmp_path / f"ray-{v}"
            score_files_ray([archive], two_variant_bundle, out, ScoreOptions(variant=v, **BASE), workers=2)
            assert outputs(out) == outputs(reference[v]), v
