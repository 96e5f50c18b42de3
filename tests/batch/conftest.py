"""Batch fixtures: one tiny bundle per problem type (from the export fixture) and small generated archives."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch import ScoreOptions


@pytest.fixture(scope="session")
def bundle(tiny_bundle_factory) -> Path:
    """A tiny single-label BERT bundle (max_length 64, fp32)."""
    return tiny_bundle_factory()


@pytest.fixture(scope="session")
def multi_bundle(tiny_bundle_factory) -> Path:
    return tiny_bundle_factory(problem_type="multi_label")


@pytest.fixture
def opts() -> ScoreOptions:
    """Options for the 2-core test machine: one ORT thread, small windows so several windows and batches occur."""
    return ScoreOptions(id_column="doc_id", threads=1, sort_window=16, token_budget=512)


@pytest.fixture
def archive(tmp_path) -> Path:
    """Three shards (one nested, one with several row groups), 30 + 45 + 25 rows."""
    root = tmp_path / "archive"
    (root / "2024").mkdir(parents=True)
    pq.write_table(make_table(30, seed=1, start_id=0), root / "a.parquet")
    pq.write_table(make_table(45, seed=2, start_id=100), root / "2024" / "b.parquet", row_group_size=10)
    pq.write_table(make_table(25, seed=3, start_id=200), root / "2024" / "c.parquet")
    return root


@pytest.fixture
def store_archive(tmp_path) -> Path:
    """The object-storage tests' archive: two shards, one in a hive folder with several row groups, 30 + 25 rows."""
    root = tmp_path / "archive"
    (root / "year=2024").mkdir(parents=True)
    pq.write_table(make_table(30, seed=1, start_id=0), root / "a.parquet")
    pq.write_table(make_table(25, seed=2, start_id=100), root / "year=2024" / "b.parquet", row_group_size=10)
    return root


from s3server import s3  # noqa: E402,F401 - the local S3 endpoint fixture
from emulators import azure, gcs  # noqa: E402,F401 - the local GCS and Azure Blob emulator fixtures
