"""score_files: one output per shard, bad inputs, manifest checks, checkpointed parts, resume."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch import Scorer, score_files
from docscore.batch.commit.layout import RUN_MANIFEST, SUCCESS, SUMMARY
from docscore.errors import BundleError, ConfigError, InputDataError


def read(path) -> pa.Table:
    return pq.read_table(path)


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    """Same schema and the same values, bit for bit (the contract: a row's outputs do not depend on how it was
    batched, read, checkpointed or which engine scored it); on failure, name the first column that differs."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        assert a.column(name).equals(b.column(name)), name


def test_one_output_per_shard_in_input_order(archive, bundle, opts, tmp_path):
    out = tmp_path / "out"
    summary = score_files([archive], bundle, out, opts)
    assert summary.ok and summary.files == 3 and summary.rows == 100
    for rel in ("a.parquet", "2024/b.parquet", "2024/c.parquet"):
        src, dst = read(archive / rel), read(out / rel)
        assert dst.column("doc_id").equals(src.column("doc_id"))
        # the runner's scores are the Scorer's on the whole table
        assert_same_rows(dst, Scorer(bundle, opts)(src))
    assert (out / SUCCESS).exists()
    saved = json.loads((out / SUMMARY).read_text())
    assert saved["rows"] == 100 and 0 <= saved["pad_fraction"] < 1 and saved["tokens_per_s"] > 0
    manifest = json.loads((out / RUN_MANIFEST).read_text())
    assert manifest["bundle"]["sha256"] and manifest["shards"]["2024/b.parquet"]["rows"] == 45
    assert {e["status"] for e in manifest["shards"].values()} == {"done"}
    # a rerun skips everything
    again = score_files([archive], bundle, out, opts)
    assert again.files == 0 and again.files_skipped == 3 and (out / SUCCESS).exists()


def test_globs_and_files_as_inputs(archive, bundle, opts, tmp_path):
    out = tmp_path / "out"
    score_files([str(archive / "2024" / "*.parquet"), archive / "a.parquet"], bundle, out, opts)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "a.parquet", "b.parquet", "c.parquet"]


def test_checkpointed_parts_give_the_same_output(archive, bundle, opts, tmp_path):
    whole = tmp_path / "whole"
    parts = tmp_path / "parts"
    score_files([archive], bundle, whole, opts)
    score_files([archive], bundle, parts, opts.replace(checkpoint_rows=7, read_batch_rows=3))
    for rel in ("a.parquet", "2024/b.parquet", "2024/c.parquet"):
        assert_same_rows(read(parts / rel), read(whole / rel))
    assert not (parts / "_docscore" / "staging").exists()


def test_empty_file_gives_empty_output_with_schema(bundle, opts, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(make_table(0), src / "empty.parquet")
    out = tmp_path / "out"
    assert score_files([src], bundle, out, opts).ok
    t = read(out / "empty.parquet")
    assert t.num_rows == 0 and t.schema == Scorer(bundle, opts).output_schema(make_table(0).schema)


def test_corrupt_file_is_reported_and_others_scored(archive, bundle, opts, tmp_path):
    (archive / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "out"
    summary = score_files([archive], bundle, out, opts)
    assert not summary.ok and summary.files_failed == 1 and summary.files == 3
    assert "broken.parquet" in summary.failed[0]["path"]
    assert (out / "a.parquet").exists() and not (out / "broken.parquet").exists()
    assert not (out / SUCCESS).exists()
    with pytest.raises(InputDataError, match="broken.parquet"):
        score_files([archive], bundle, tmp_path / "out2", opts.replace(fail_fast=True))


def test_missing_text_column_is_reported_with_the_columns_present(bundle, opts, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"doc_id": [1], "body": ["x"]}), src / "x.parquet")
    pq.write_table(make_table(5), src / "y.parquet")  # the column exists in the run: the odd file fails alone
    summary = score_files([src], bundle, tmp_path / "out", opts)
    assert summary.files_failed == 1 and summary.scored == ["y.parquet"]
    assert "['doc_id', 'body']" in summary.failed[0]["error"] and "x.parquet" in summary.failed[0]["error"]
    with pytest.raises(ConfigError, match="--text-column 'text' is in none of the 1 input file"):
        score_files([src / "x.parquet"], bundle, tmp_path / "out2", opts)  # in no file at all: refused up front
    assert not (tmp_path / "out2").exists()


def test_tampered_bundle_is_refused(bundle, opts, tmp_path, archive):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with open(copy / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="hash check"):
        score_files([archive], copy, tmp_path / "out", opts)
    assert not (tmp_path / "out").exists()  # refused before the output is touched: no lock, no _docscore/


def test_changed_bundle_or_options_is_refused_unless_overwrite(archive, bundle, multi_bundle, opts, tmp_path):
    out = tmp_path / "out"
    score_files([archive], bundle, out, opts)
    with pytest.raises(ConfigError, match="bundle changed"):
        score_files([archive], multi_bundle, out, opts)
    with pytest.raises(ConfigError, match="long_docs"):
        score_files([archive], bundle, out, opts.replace(long_docs="chunk"))
    summary = score_files([archive], multi_bundle, out, opts.replace(overwrite=True))
    assert summary.files == 3 and "labels" in read(out / "a.parquet").column_names


def test_changed_input_is_detected(archive, bundle, opts, tmp_path):
    out = tmp_path / "out"
    score_files([archive], bundle, out, opts)
    pq.write_table(make_table(31, seed=99), archive / "a.parquet")
    refused = score_files([archive], bundle, out, opts.replace(on_change="refuse"))
    assert not refused.ok and refused.changed[0]["action"] == "refused" and "a.parquet" in refused.changed[0]["path"]
    assert read(out / "a.parquet").num_rows == 30 and not (out / SUCCESS).exists()
    summary = score_files([archive], bundle, out, opts)  # default: rescore
    assert summary.ok and summary.files == 1 and read(out / "a.parquet").num_rows == 31


def test_unfinished_shard_resumes_from_committed_parts(archive, bundle, opts, tmp_path):
    ref = tmp_path / "ref"
    o = opts.replace(checkpoint_rows=10)
    score_files([archive], bundle, ref, o)
    out = tmp_path / "out"
    score_files([archive], bundle, out, o)
    # simulate a run killed after two parts of b: drop its output, mark it pending, keep parts 0-1
    manifest = json.loads((out / RUN_MANIFEST).read_text())
    manifest["shards"]["2024/b.parquet"]["status"] = "pending"
    (out / RUN_MANIFEST).write_text(json.dumps(manifest))
    (out / "2024/b.parquet").unlink()
    parts = out / "_docscore" / "staging" / "2024/b.parquet.parts"
    parts.mkdir(parents=True)
    full = read(ref / "2024/b.parquet")
    for i in range(2):
        pq.write_table(full.slice(i * 10, 10), parts / f"part-{i:05d}.staged")
    summary = score_files([archive], bundle, out, o)
    assert summary.files == 1 and summary.rows == 25  # only parts 2-4 were scored again
    assert read(out / "2024/b.parquet").equals(full)


def test_output_dir_with_foreign_parquet_is_refused(archive, bundle, opts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"x": [1]}), out / "mine.parquet")
    with pytest.raises(ConfigError, match="no _docscore_run.json"):
        score_files([archive], bundle, out, opts)


def test_summary_counts_rows_of_unknown_tokens(bundle, opts, tmp_path):
    src = tmp_path / "in" / "emoji.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"doc_id": [1, 2, 3], "text": ["🙂🙂🙂", "my invoice", "x" * 5000]}), src)
    summary = score_files([src.parent], bundle, tmp_path / "out", opts)
    assert summary.unk_rows == 2 and summary.to_dict()["unk_rows"] == 2
