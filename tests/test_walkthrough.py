"""The README's "Next: your own data" walkthrough, run as a user would: five commands, from a folder with no
samples/, on generated data whose columns are not docscore's defaults (``body``/``category`` to train on, an archive
with ``content``). Only the body is swapped for a tiny one, to keep the test fast."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"billing": ["invoice", "charged", "refund", "payment"], "shipping": ["parcel", "delivery", "courier", "late"],
         "tech": ["crash", "login", "error", "update"]}


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        words = rng.sample(WORDS[label], 2) + rng.sample(["please", "help", "my", "the", "again", "today"], 3)
        rows.append((" ".join(rng.sample(words, len(words))) + f" #{i}", label))
    return rows


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "docscore", *argv], cwd=cwd, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, (argv, res.stdout[-2000:], res.stderr[-3000:])
    return res


@pytest.fixture
def tiny_body(tmp_path_factory, hf_tokenizer):
    from transformers import AutoModel

    from tinymodels import tiny_body_config

    path = tmp_path_factory.mktemp("body")
    AutoModel.from_config(tiny_body_config("bert")).save_pretrained(path)
    hf_tokenizer.save_pretrained(path)
    return path


def test_five_commands_on_your_own_data_from_another_folder(tmp_path, tiny_body):
    work = tmp_path / "work"
    (work / "archive").mkdir(parents=True)
    for name, rows in (("labelled.csv", _texts(90, 1)), ("eval.csv", _texts(30, 2))):
        with open(work / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["body", "category"])
            w.writerows(rows)
    archive = [t for t, _ in _texts(40, 3)]
    pq.write_table(pa.table({"doc_id": list(range(40)), "content": archive}), work / "archive" / "part-0.parquet")
    assert not (work / "samples").exists()

    # 1-5: as in the README, plus --body (the README uses the embedded default)
    run(work, "train", "labelled.csv", "--eval-data", "eval.csv", "--text-column", "body", "--label-column",
        "category", "--output", "runs/ckpt", "--body", str(tiny_body))
    run(work, "export-onnx", "runs/ckpt", "--output", "runs/bundle", "--optimize")
    run(work, "verify", "--model", "runs/bundle", "--checkpoint", "runs/ckpt")
    run(work, "score", "archive", "--model", "runs/bundle", "--output", "runs/scores", "--text-column", "content",
        "--id-column", "doc_id")
    report = json.loads(run(work, "report", "--output", "runs/scores", "--json").stdout)

    manifest = json.loads((work / "runs/bundle/docscore.json").read_text())
    gate = manifest["variants"]["fp32"]["parity"]
    assert "gate_texts.json" in gate["data_source"] and gate["data"]["rows"] == 30  # the model's own eval texts
    assert manifest["spec"]["head"]["labels"] == ["billing", "shipping", "tech"]
    assert report["rows"] == 40 and report["scored_rows"] == 40
    assert pq.read_table(work / "runs/scores/part-0.parquet").column("doc_id").to_pylist() == list(range(40))
