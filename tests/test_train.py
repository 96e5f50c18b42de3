"""Training: learns the samples, is deterministic, and refuses bad input before training starts."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from tinymodels import SAMPLES, tiny_body_config
from docscore.cli import main
from docscore.errors import InputDataError
from docscore.train import TrainingArguments, train


@pytest.fixture(scope="session")
def tiny_body_dir(tmp_path_factory, hf_tokenizer):
    """A tiny BERT body saved like a hub folder (config + safetensors + tokenizer)."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-body")
    AutoModel.from_config(tiny_body_config("bert")).save_pretrained(path)
    hf_tokenizer.save_pretrained(path)
    return path


def tiny_args(tmp_path, tiny_body_dir, **kw):
    base = dict(train_data=str(SAMPLES / "train.csv"), eval_data=str(SAMPLES / "eval.csv"), val_split=0.0,
                output=str(tmp_path / "ck"), body=str(tiny_body_dir), num_train_epochs=4, per_device_train_batch_size=16,
                learning_rate=1e-3, head_learning_rate=1e-2, max_length=64, seed=7)
    base.update(kw)
    return TrainingArguments(**base)


def test_training_learns_the_samples(tmp_path, tiny_body_dir):
    result = train(tiny_args(tmp_path, tiny_body_dir))
    first, best = result.epochs[0], result.best
    assert result.epochs[-1].train_loss < first.train_loss
    assert best.accuracy > result.majority_baseline + 0.2
    metrics = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert {"train_loss", "eval_loss", "accuracy", "macro_f1"} <= set(metrics["epochs"][0])
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["spec"]["head"]["labels"] == ["account", "billing", "shipping", "technical"]
    assert cfg["training"]["arguments"]["seed"] == 7


def test_same_seed_same_weights(tmp_path, tiny_body_dir):
    a = train(tiny_args(tmp_path / "a", tiny_body_dir, num_train_epochs=1))
    b = train(tiny_args(tmp_path / "b", tiny_body_dir, num_train_epochs=1))
    wa, wb = load_file(a.output / "model.safetensors"), load_file(b.output / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    c = train(tiny_args(tmp_path / "c", tiny_body_dir, num_train_epochs=1, seed=8))
    wc = load_file(c.output / "model.safetensors")
    assert any(not (wa[k] == wc[k]).all() for k in wa)


def test_multi_label_and_regression(tmp_path, tiny_body_dir):
    texts = ["refund my card", "parcel lost", "app crash", "charged twice and parcel late"] * 6
    multi = pa.table({"text": texts, "label": [["billing"], ["shipping"], ["tech"], ["billing", "shipping"]] * 6})
    pq.write_table(multi, tmp_path / "multi.parquet")
    r = train(tiny_args(tmp_path, tiny_body_dir, train_data=str(tmp_path / "multi.parquet"), eval_data=None,
                        val_split=0.25, num_train_epochs=1, output=str(tmp_path / "m")))
    cfg = json.loads((r.output / "config.json").read_text())
    assert cfg["spec"]["head"]["problem_type"] == "multi_label"
    assert cfg["spec"]["head"]["labels"] == ["billing", "shipping", "tech"]
    reg = pa.table({"text": texts, "label": [0.1, 0.5, 0.9, 0.3] * 6})
    pq.write_table(reg, tmp_path / "reg.parquet")
    r = train(tiny_args(tmp_path, tiny_body_dir, train_data=str(tmp_path / "reg.parquet"), eval_data=None,
                        val_split=0.25, num_train_epochs=1, metric_for_best_model="loss", output=str(tmp_path / "r")))
    cfg = json.loads((r.output / "config.json").read_text())
    assert cfg["spec"]["head"]["problem_type"] == "regression"


# --- bad input: clear error naming file and column, exit code 2, nothing written ---

def _write_csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("body,label\nhello,a\n", "column 'text' not found; columns present: body, label"),
        ("text,label\n", "empty"),
        ("text,label\nhello,a\n,b\nworld,a\n", "rows 1"),
        ("text,label\nhello,a\nworld,\nthird,b\n", "null label"),
    ],
    ids=["missing-column", "empty", "null-text", "null-label"],
)
def test_bad_training_data(tmp_path, tiny_body_dir, capsys, content, needle):
    data = _write_csv(tmp_path / "bad.csv", content)
    rc = main(["train", data, "--output", str(tmp_path / "out"), "--body", str(tiny_body_dir), "--val-split", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "bad.csv" in err
    assert not (tmp_path / "out").exists()


def test_eval_label_never_seen(tmp_path, tiny_body_dir, capsys):
    ev = _write_csv(tmp_path / "eval.csv", "text,label\nhello,billing\nhi,refunds\n")
    rc = main(["train", str(SAMPLES / "train.csv"), "--eval-data", ev, "--output", str(tmp_path / "out"),
               "--body", str(tiny_body_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "refunds" in err and "eval.csv" in err and "'label'" in err and "rows 1" in err


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputDataError, match="broken.parquet"):
        train(TrainingArguments(train_data=str(bad), output=str(tmp_path / "o")))
    with pytest.raises(InputDataError, match="not found"):
        train(TrainingArguments(train_data=str(tmp_path / "missing.csv"), output=str(tmp_path / "o")))


def test_train_help_documents_every_option(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in fields(TrainingArguments):
        if f.name in ("train_data", "grad_clip"):
            continue
        assert "--" + f.name.replace("_", "-") in out, f.name


@pytest.mark.slow
def test_real_minilm_body_trains(tmp_path):
    """The embedded all-MiniLM-L6-v2 body (real weights) fine-tunes on the samples via the CLI."""
    out = tmp_path / "minilm"
    rc = main(["train", str(SAMPLES / "train.csv"), "--eval-data", str(SAMPLES / "eval.csv"), "--output", str(out),
               "--epochs", "1", "--json"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["accuracy"] >= 0.9 > metrics["majority_baseline_accuracy"]


def _train_cmd(out, body, *extra) -> list[str]:
    import sys

    return [sys.executable, "-m", "docscore", "train", str(SAMPLES / "train.csv"), "--eval-data",
            str(SAMPLES / "eval.csv"), "--output", str(out), "--body", str(body), "--max-steps",
            "12", "--save-steps", "3", "--per-device-train-batch-size", "8", "--learning-rate", "1e-3",
            "--head-learning-rate", "1e-2", "--max-length", "32", "--seed", "5", *extra]


def _same_weights(a, b) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, tiny_body_dir):
    """SIGKILL once a resume checkpoint is on disk, then --resume-from-checkpoint last: the final weights and
    metrics equal an uninterrupted run's, bit for bit (CPU)."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = tmp_path
    ref = root / "ref"
    done = subprocess.run(_train_cmd(ref, tiny_body_dir), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = root / "killed"
    proc = subprocess.Popen(_train_cmd(out, tiny_body_dir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # a complete checkpoint: Trainer writes trainer_state.json last
    while not list((out / "_training").glob("checkpoint-6/trainer_state.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint-6 within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "model.safetensors").exists()  # the final checkpoint is published only whole
    resumed = subprocess.run(_train_cmd(out, tiny_body_dir, "--resume-from-checkpoint", "last"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _same_weights(ref, out) == 0.0
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert ma["best"] == mb["best"] and ma["best_epoch"] == mb["best_epoch"]
    # it did resume (a fresh start would end with the same weights too)
    assert ma["resumed_from"] is None and "checkpoint-" in (mb["resumed_from"] or ""), mb["resumed_from"]


@pytest.mark.slow
def test_two_processes_with_torchrun_train_as_well_as_one(tmp_path, tiny_body_dir):
    """torchrun --nproc-per-node 2 (DDP over gloo on CPU) with the same global batch: a checkpoint whose eval
    macro-F1 is within 0.02 of the one-process run's; only rank 0 writes."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--max-steps", "150", "--save-steps", "50"]
    a = subprocess.run(_train_cmd(one, tiny_body_dir, *common), env=env, capture_output=True, text=True,
                       timeout=900)
    assert a.returncode == 0, a.stderr[-2000:]
    cmd = _train_cmd(two, tiny_body_dir, *common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "docscore", *cmd[3:]]
    i = cmd.index("--per-device-train-batch-size")
    cmd[i + 1] = "4"  # 2 processes x 4 = the one-process run's global batch of 8
    b = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert b.returncode == 0, b.stderr[-3000:]
    fa, fb = (json.loads((d / "metrics.json").read_text())["best"]["macro_f1"] for d in (one, two))
    print(f"eval macro-F1: one process {fa:.4f}, two processes {fb:.4f}")
    assert abs(fa - fb) <= 0.02, (fa, fb)
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith("_")) == \
        sorted(p.name for p in one.iterdir() if not p.name.startswith("_"))


def test_report_to_tensorboard_writes_events_with_the_checkpoint(tmp_path, tiny_body_dir):
    pytest.importorskip("tensorboard")  # in the dev extra: tests/skips.py does not allow this skip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_args(tmp_path, tiny_body_dir, num_train_epochs=1, report_to="tensorboard"))
    events = sorted((result.output / "runs").rglob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(result.output).as_posix() for p in result.output.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and "eval/macro_f1" in acc.Tags()["scalars"]
    assert (result.output / "training_curve.png").stat().st_size > 1000


def test_class_weights_balanced_and_from_a_file():
    import numpy as np

    from docscore.errors import ConfigError
    from docscore.spec import HeadConfig
    from docscore.train.dataset import class_weights

    head = HeadConfig(labels=("a", "b", "c"))
    w = class_weights("balanced", np.array([0, 0, 0, 1]), head)  # N / (L * count), an unseen label counts 1
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 4 / 3])
    multi = HeadConfig(labels=("x", "y"), problem_type="multi_label")
    assert class_weights("balanced", np.array([[1, 0], [1, 1], [0, 0], [1, 0]]), multi).tolist() == \
        pytest.approx([1 / 3, 3.0])  # negatives / positives per label (float32)
    with pytest.raises(ConfigError, match="not in the training data"):
        class_weights(json_file({"zzz": 2}), np.array([0]), head)
    assert class_weights(json_file({"b": 5}), np.array([0]), head).tolist() == [1.0, 5.0, 1.0]


def json_file(data) -> str:
    import tempfile

    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(data, f)
    f.close()
    return f.name


def test_weighted_loss_accumulation_scheduler_and_early_stopping(tmp_path, tiny_body_dir):
    """--class-weights changes the loss (so the weights); --gradient-accumulation-steps 2 halves the optimisation
    steps; --lr-scheduler-type cosine is what the Trainer ran; --early-stopping-patience stops a run whose metric
    cannot improve (learning rates 0)."""
    plain = train(tiny_args(tmp_path / "p", tiny_body_dir, num_train_epochs=1))
    weighted = train(tiny_args(tmp_path / "w", tiny_body_dir, num_train_epochs=1, class_weights="balanced"))
    wp, ww = load_file(plain.output / "model.safetensors"), load_file(weighted.output / "model.safetensors")
    assert any(not (wp[k] == ww[k]).all() for k in wp)
    accum = train(tiny_args(tmp_path / "a", tiny_body_dir, num_train_epochs=1, gradient_accumulation_steps=2,
                            lr_scheduler_type="cosine"))
    assert accum.global_step == -(-plain.global_step // 2)
    state = json.loads((accum.output / "config.json").read_text())["training"]["arguments"]
    assert state["lr_scheduler_type"] == "cosine" and state["gradient_accumulation_steps"] == 2
    stopped = train(tiny_args(tmp_path / "s", tiny_body_dir, num_train_epochs=50, learning_rate=0.0,
                              head_learning_rate=0.0, eval_steps=1, early_stopping_patience=2))
    assert stopped.early_stopped and stopped.global_step == 3  # best at step 1, then 2 evaluations without gain
