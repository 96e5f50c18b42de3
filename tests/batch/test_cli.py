"""``docscore score`` / ``docscore report`` from the command line, and the torch-free scoring path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docscore.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_scoring_path_imports_neither_torch_nor_transformers(archive, bundle, tmp_path):
    code = (
        "import sys\n"
        "import docscore.batch, docscore.batch.runner, docscore.batch.report, docscore.commands.score\n"
        "from docscore.cli import main\n"
        f"rc = main(['score', {str(archive)!r}, '--model', {str(bundle)!r}, '--output', {str(tmp_path / 'o')!r},"
        " '--threads', '1', '--no-progress'])\n"
        "assert rc == 0, rc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--output", "--text-column", "--id-column", "--passthrough", "--device", "--variant",
                 "--threads", "--token-budget", "--long-docs", "--chunk-overlap", "--chunk-agg", "--overwrite",
                 "--fail-fast", "default: 8192"):
        assert flag in text, flag


def test_cli_scores_reports_and_fails_on_a_broken_file(archive, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["score", str(archive), "--model", str(bundle), "--output", str(out), "--id-column", "doc_id",
               "--passthrough", "source", "--threads", "1", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 100 and summary["files"] == 3
    assert main(["report", "--output", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == 100 and sum(r["rows"] for r in rep["labels"]) == 100
    assert sum(b["rows"] for b in rep["confidence"]) == 100
    (archive / "zz-broken.parquet").write_bytes(b"not parquet at all")
    rc = main(["score", str(archive), "--model", str(bundle), "--output", str(out), "--id-column", "doc_id",
               "--passthrough", "source", "--threads", "1", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1 and "zz-broken.parquet" in text and "3 already done" in text


def test_cuda_request_without_gpu_exits_with_a_clear_error(archive, bundle, tmp_path, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    rc = main(["score", str(archive), "--model", str(bundle), "--output", str(tmp_path / "o"), "--device", "cuda"])
    assert rc == 2 and "--device cuda was requested" in capsys.readouterr().err


def test_fail_fast_exits_1_and_commits_the_files_finished_before_it(archive, bundle, tmp_path, capsys):
    (archive / "zz_broken.parquet").write_bytes(b"PAR1 this is not parquet")  # discovered last
    out = tmp_path / "out"
    rc = main(["score", str(archive), "--model", str(bundle), "--output", str(out), "--threads", "1",
               "--no-progress", "--fail-fast"])
    err = capsys.readouterr().err
    assert rc == 1 and "--fail-fast" in err and "zz_broken.parquet" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "2024/b.parquet", "2024/c.parquet", "a.parquet"]
    assert not (out / "_SUCCESS").exists()
    manifest = json.loads((out / "_docscore_run.json").read_text())
    assert manifest["shards"]["zz_broken.parquet"]["status"] == "failed"
    assert {manifest["shards"][r]["status"] for r in ("a.parquet", "2024/b.parquet", "2024/c.parquet")} == {"done"}


def test_a_closed_stdout_pipe_keeps_the_runs_exit_code(archive, bundle, tmp_path):
    """`docscore score ... | head -1`: a reader that went away is not a failure of the run."""
    cmd = (f"{sys.executable} -m docscore score {archive} --model {bundle} --output {tmp_path / 'o'} --threads 1 "
           "--no-progress --json | true; exit ${PIPESTATUS[0]}")
    res = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert (tmp_path / "o" / "_SUCCESS").exists()


def test_an_hdfs_output_is_refused_in_one_line(archive, bundle, tmp_path, capsys):
    rc = main(["score", str(archive), "--model", str(bundle), "--output", "hdfs://127.0.0.1:1/scores",
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    # refused either by pyarrow's HDFS client (no libhdfs/JVM) or, where it loads, by the lock's missing exclusive create
    assert rc == 2 and len(err) == 1 and "hdfs://127.0.0.1/scores" in err[0], err
    assert not (tmp_path / "scores").exists()


def test_a_text_column_found_in_no_input_is_refused_in_one_line_leaving_nothing(bundle, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"doc_id": [1, 2], "content": ["a parcel", "a refund"]}), src / "a.parquet")
    pq.write_table(pa.table({"doc_id": [3], "content": ["late"]}), src / "b.parquet")
    out = tmp_path / "out"
    rc = main(["score", str(src), "--model", str(bundle), "--output", str(out), "--no-progress"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1, captured
    assert "--text-column 'text'" in err[0] and "content" in err[0] and "--text-column content" in err[0], err
    assert not out.exists() and not captured.out


def test_a_model_folder_given_as_model_names_the_export_command(bundle, tiny_checkpoint_factory, archive, tmp_path,
                                                               capsys):
    ckpt = tiny_checkpoint_factory()
    rc = main(["score", str(archive), "--model", str(ckpt), "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 4 and f"`docscore export-onnx {ckpt} --output BUNDLE`" in err
    assert not (tmp_path / "o").exists()


def test_report_counts_add_up_over_rows_with_errors(bundle, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in"
    src.mkdir()
    texts = ["my parcel is late", None, "refund my order", "", "the app crashes", "charged twice"]
    pq.write_table(pa.table({"doc_id": list(range(6)), "text": pa.array(texts, pa.string())}), src / "a.parquet")
    out = tmp_path / "out"
    assert main(["score", str(src), "--model", str(bundle), "--output", str(out), "--no-progress",
                 "--max-error-rate", "1"]) == 0
    capsys.readouterr()
    assert main(["report", "--output", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["rows"], rep["scored_rows"], rep["error_rows"]) == (6, 4, 2) and sum(rep["errors"].values()) == 2
    assert sum(r["rows"] for r in rep["labels"]) == 4 and sum(b["rows"] for b in rep["confidence"]) == 4
    assert abs(sum(r["share"] for r in rep["labels"]) - 1.0) < 1e-9
    assert main(["report", "--output", str(out)]) == 0
    assert "6 rows in 1 file(s): 4 scored, 2 with a per-row error" in capsys.readouterr().out
