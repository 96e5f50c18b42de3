"""Recipe: score a Spark DataFrame with docscore's scorer, through ``mapInArrow``.

For archives that already live in Spark. The same :class:`docscore.batch.Scorer` that ``docscore score`` runs is
rebuilt in each Python worker (once per worker process, reused across partitions) and fed Arrow record batches;
rows keep their order within each partition, and bad rows get an ``error`` instead of scores, as in local mode.

    spark-submit samples/spark_recipe.py BUNDLE INPUT_PARQUET OUTPUT_DIR [--text-column text] [--id-column doc_id]

Needs on every executor: ``pip install docscore`` (no torch) in the Python that Spark's workers run (set
``PYSPARK_PYTHON`` to it, e.g. a virtualenv's ``bin/python``) and the bundle at the same path (or shipped with
``--files`` / ``SparkFiles``). Give each task one ORT thread (``threads=1``) and let Spark's task slots use the
cores. Spark writes its own output (``df.write.parquet``), with Spark's commit protocol: docscore's run manifest,
``_SUCCESS`` of the manifest kind and resume are those of ``docscore score`` / ``--engine ray``, not of this recipe.

Tested by ``tests/batch/test_spark.py`` with pyspark 4.3 on Java 17 (local[2]); skipped where pyspark is absent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from docscore.batch import ScoreOptions, Scorer

_SCORERS: dict = {}  # one loaded scorer per Python worker process, keyed by (bundle, options)


def _scorer(bundle: str, options: ScoreOptions) -> Scorer:
    key = (bundle, options)
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(bundle, options).load()
    return _SCORERS[key]


def score_spark(df, bundle: str | Path, options: ScoreOptions | None = None):
    """Return ``df`` scored: the id / passthrough columns, then ``label``, ``score``, ``score_<label>``,
    ``num_tokens``, ``num_chunks``, ``unk_fraction``, ``error`` (see :mod:`docscore.batch.scorer`)."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    options = options or ScoreOptions(threads=1)
    bundle = str(Path(bundle).resolve())
    driver_scorer = Scorer(bundle, options)  # reads the bundle's labels for the output schema; loads no model
    columns = driver_scorer.input_columns()
    selected = df.select(*columns)
    out_arrow = driver_scorer.output_schema(to_arrow_schema(selected.schema))
    out_spark = from_arrow_schema(out_arrow)
    expected = to_arrow_schema(out_spark)  # the exact Arrow types Spark checks the batches against

    def score_partition(batches):
        scorer = _scorer(bundle, options)
        for batch in batches:
            yield from scorer(batch).cast(expected).to_batches()

    return selected.mapInArrow(score_partition, out_spark)


def main() -> None:
    from pyspark.sql import SparkSession

    ap = argparse.ArgumentParser(description="score a Parquet dataset with docscore on Spark (mapInArrow)")
    ap.add_argument("bundle")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--id-column", default=None)
    args = ap.parse_args()
    spark = SparkSession.builder.appName("docscore").getOrCreate()
    options = ScoreOptions(text_column=args.text_column, id_column=args.id_column, threads=1)
    score_spark(spark.read.parquet(args.input), args.bundle, options).write.mode("errorifexists").parquet(args.output)
    spark.stop()


if __name__ == "__main__":
    main()
