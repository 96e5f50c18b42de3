"""The Spark recipe (samples/spark_recipe.py): mapInArrow with the same scorer gives the rows of local mode.

pyspark is not a docscore dependency: this test runs where it is installed (and Java 17 is present)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_hive_archive, make_table
from test_runner import assert_same_rows

from docscore.batch import score_files

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("pyspark needs Java", allow_module_level=True)

pytestmark = pytest.mark.slow


def load_recipe():
    path = Path(__file__).resolve().parents[2] / "samples" / "spark_recipe.py"
    spec = importlib.util.spec_from_file_location("spark_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spark_recipe_matches_local_scores(bundle, opts, tmp_path, monkeypatch):
    import sys

    from pyspark.sql import SparkSession

    # Spark's Python workers must run this interpreter (the one with docscore and pyarrow), not `python3` on PATH.
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)

    table = make_table(40, seed=4)
    texts = table.column("text").to_pylist()
    texts[5], texts[6] = None, ""
    table = table.set_column(1, "text", pa.array(texts, pa.string()))
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=15)
    score_files([tmp_path / "in.parquet"], bundle, tmp_path / "local", opts)
    want = pq.read_table(tmp_path / "local" / "in.parquet")

    spark = (SparkSession.builder.master("local[2]").appName("docscore-test")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2").getOrCreate())
    try:
        df = spark.read.parquet(str(tmp_path / "in.parquet"))
        scored = load_recipe().score_spark(df, bundle, opts)
        got = pa.Table.from_batches(scored._collect_as_arrow()).sort_by("doc_id")
    finally:
        spark.stop()
    assert got.column("doc_id").to_pylist() == list(range(40))
    assert got.column("error").to_pylist()[5:7] == ["null text", "empty text"]
    assert_same_rows(got.cast(want.schema), want)


def test_spark_reads_only_the_outputs_of_a_run_with_leftovers_and_hive_keys(bundle, opts, tmp_path):
    """``spark.read.parquet(OUT)``: staging a killed run left under ``_docscore/`` is skipped, hive keys work."""
    from pyspark.sql import SparkSession

    src = make_hive_archive(tmp_path / "archive")
    out = tmp_path / "out"
    assert score_files([src], bundle, out, opts.replace(passthrough=("date",))).ok
    staged = out / "_docscore" / "staging" / "date=2026-11-28" / "part-1.parquet.parts"
    staged.mkdir(parents=True)
    pq.write_table(make_table(7), staged / "part-00000.staged")  # what a killed run leaves
    spark = (SparkSession.builder.master("local[1]").appName("docscore-read")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        df = spark.read.parquet(str(out))
        assert df.count() == 30 and df.select("date").distinct().count() == 2
    finally:
        spark.stop()
