"""The Ray engine: same outputs and manifest as local mode, resume after failures, resource sizing, clear errors.

One local Ray instance (2 CPUs) serves the whole module; the tests that start Ray-less subprocesses never touch it.
Every test that uses it must give all of its CPUs back (checked after each test): an actor left alive by one run
used to hang a later one.
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_table
from test_runner import assert_same_rows

from docscore.batch import ScoreOptions, Scorer, score_files
from docscore.batch.ray import (RayOptions, RayStallError, plan_workers, ray_connection, score_dataset,
                                       score_files_ray)
from docscore.batch.commit.layout import RUN_MANIFEST, SUCCESS
from docscore.errors import ConfigError, DeviceError

pytestmark = pytest.mark.slow

OUTPUTS = ("a.parquet", "2024/b.parquet", "2024/c.parquet", "2024/empty.parquet", "ints.parquet")


@pytest.fixture(scope="module")
def ray_cluster(request, tmp_path_factory):
    """A private local Ray instance with 2 CPUs, its session files in a short temporary directory.

    Its workers inherit this process's environment when Ray starts: the S3 endpoint's (fake) credentials, as a
    node's standard chain would give them, and a bundle cache of the test's own."""
    try:
        request.getfixturevalue("s3")
    except pytest.skip.Exception:
        pass  # no moto: the S3 tests skip, the others run
    saved = os.environ.get("DOCSCORE_CACHE")
    os.environ["DOCSCORE_CACHE"] = str(tmp_path_factory.mktemp("ray-cache"))
    tmp = tempfile.mkdtemp(prefix="dsray-")
    try:
        with ray_connection(RayOptions(num_cpus=2, tmp_dir=tmp)) as ray:
            assert ray.cluster_resources()["CPU"] == 2
            assert os.listdir(tmp), "Ray's session files belong under --ray-tmp-dir"
            yield ray
        assert not ray.is_initialized()
    finally:
        if saved is None:
            os.environ.pop("DOCSCORE_CACHE", None)
        else:
            os.environ["DOCSCORE_CACHE"] = saved


def cpus_back(ray, want: float = 2.0, timeout_s: float = 20.0) -> float:
    """Wait until Ray has ``want`` CPUs free again (released resources show up after a moment); return the last
    count seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free >= want or time.monotonic() > deadline:
            return free
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def no_leftover_actors(request):
    """After each test on the module's Ray instance, every CPU is free again: nothing the test ran (actors, tasks,
    datasets) outlives it, so a leak fails here instead of hanging a later run."""
    if "ray_cluster" not in request.fixturenames:
        yield
        return
    ray = request.getfixturevalue("ray_cluster")
    yield
    free = cpus_back(ray)
    assert free == 2, f"the test left Ray with {free:g} of 2 CPUs free: {ray.available_resources()}"


@pytest.fixture
def bad_archive(tmp_path):
    """Four readable shards with bad rows (null, empty, whitespace-only and non-string texts; one file of one row
    group, one of several, an empty one) and a corrupt one."""
    root = tmp_path / "archive"
    (root / "2024").mkdir(parents=True)
    a = make_table(30, seed=1, start_id=0)
    texts = a.column("text").to_pylist()
    texts[3], texts[10], texts[11], texts[29] = None, "", "   \n\t", None
    pq.write_table(a.set_column(1, "text", pa.array(texts, pa.string())), root / "a.parquet")
    pq.write_table(make_table(45, seed=2, start_id=100), root / "2024" / "b.parquet", row_group_size=10)
    pq.write_table(make_table(25, seed=3, start_id=200), root / "2024" / "c.parquet")
    pq.write_table(make_table(0), root / "2024" / "empty.parquet")
    pq.write_table(pa.table({"doc_id": pa.array([300, 301], pa.int64()), "text": [7, None],
                             "source": ["x", "y"]}), root / "ints.parquet")  # another schema: its own dataset
    (root / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    return root


@pytest.fixture
def ray_opts() -> ScoreOptions:
    """Small windows and parts, so several actor calls, sort windows and committed parts occur."""
    return ScoreOptions(id_column="doc_id", passthrough=("source",), threads=1, sort_window=8, token_budget=512,
                        checkpoint_rows=12, max_error_rate=0.5)  # bad_archive's null/empty/int texts: 6 % of rows


def assert_same_run(out_a, out_b, rels=OUTPUTS) -> None:
    """Same outputs (rows, order, labels, scores to fp32 tolerance, errors) and the same manifest entries."""
    for rel in rels:
        assert_same_rows(pq.read_table(out_a / rel), pq.read_table(out_b / rel))
    man_a, man_b = (json.loads((o / RUN_MANIFEST).read_text()) for o in (out_a, out_b))
    assert man_a["bundle"] == man_b["bundle"] and man_a["options"] == man_b["options"]
    assert _untagged(man_a["shards"]) == _untagged(man_b["shards"])  # score files too (their names are random)
    assert (out_a / SUCCESS).exists() == (out_b / SUCCESS).exists()
    assert sorted(_untag(p.relative_to(out_a).as_posix()) for p in out_a.rglob("*") if p.is_file()) == \
        sorted(_untag(p.relative_to(out_b).as_posix()) for p in out_b.rglob("*") if p.is_file())


def _untag(rel: str) -> str:
    """A score file's name without its random tag (``<rel>.<tag>.scores``)."""
    return re.sub(r"\.[0-9a-f]{12}\.scores$", ".scores", rel)


def _untagged(shards: dict) -> dict:
    return {rel: {**e, **({"reuse": _untag(e["reuse"])} if "reuse" in e else {})} for rel, e in shards.items()}


def test_ray_run_equals_local_run(ray_cluster, bad_archive, bundle, ray_opts, tmp_path):
    local = score_files([bad_archive], bundle, tmp_path / "local", ray_opts)
    summary = score_files_ray([bad_archive], bundle, tmp_path / "ray", ray_opts)
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    for key in ("rows", "errors", "files", "files_failed", "sequences", "tokens", "variant", "bundle_sha256"):
        assert getattr(summary, key) == getattr(local, key), key
    assert summary.failed == local.failed and "broken.parquet" in summary.failed[0]["path"]
    assert not summary.ok and not (tmp_path / "ray" / SUCCESS).exists()
    assert 0 < summary.pad_fraction < 0.5
    a = pq.read_table(tmp_path / "ray" / "a.parquet")
    assert a.column("doc_id").to_pylist() == list(range(30))
    errors = a.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [3, 10, 11, 29]
    assert a.column("label").null_count == 4 and a.column("score").null_count == 4
    ints = pq.read_table(tmp_path / "ray" / "ints.parquet")
    assert ints.column("error").to_pylist()[0].startswith("non-string text")
    assert pq.read_table(tmp_path / "ray" / "2024" / "empty.parquet").num_rows == 0


def test_crashed_actor_is_retried_and_no_row_is_lost(ray_cluster, bad_archive, bundle, ray_opts, tmp_path,
                                                      monkeypatch):
    (bad_archive / "broken.parquet").unlink()
    marker = tmp_path / "crashed"
    monkeypatch.setenv("DOCSCORE_RAY_FAILPOINT", f"crash:{marker}")
    summary = score_files_ray([bad_archive], bundle, tmp_path / "ray", ray_opts)
    assert marker.exists(), "the failpoint must have killed an actor"
    assert summary.ok and (tmp_path / "ray" / SUCCESS).exists()
    monkeypatch.delenv("DOCSCORE_RAY_FAILPOINT")
    score_files([bad_archive], bundle, tmp_path / "local", ray_opts)
    assert_same_run(tmp_path / "local", tmp_path / "ray")


def test_rerun_after_a_failed_run_gives_one_copy_of_every_row(ray_cluster, bad_archive, bundle, ray_opts,
                                                               tmp_path, monkeypatch):
    (bad_archive / "broken.parquet").unlink()
    out = tmp_path / "ray"
    marker = tmp_path / "raised"
    monkeypatch.setenv("DOCSCORE_RAY_FAILPOINT", f"raise:{marker}")
    with pytest.raises(Exception, match="docscore failpoint") as failed:
        score_files_ray([bad_archive], bundle, out, ray_opts)
    # The failed run's actors are gone although its exception (and traceback) is still held, as an API user or a
    # test runner holds it: they used to live on, holding their CPUs, and the rerun waited forever for its actors.
    assert cpus_back(ray_cluster, timeout_s=10) == 2, ray_cluster.available_resources()
    del failed
    manifest = json.loads((out / RUN_MANIFEST).read_text())
    assert not (out / SUCCESS).exists()
    assert any(s["status"] != "done" for s in manifest["shards"].values()) or len(manifest["shards"]) < 4
    monkeypatch.delenv("DOCSCORE_RAY_FAILPOINT")
    summary = score_files_ray([bad_archive], bundle, out, ray_opts)
    assert summary.ok and (out / SUCCESS).exists()
    assert not list(out.rglob("*.tmp")) and not (out / "_docscore" / "staging").exists()
    score_files([bad_archive], bundle, tmp_path / "local", ray_opts)
    assert_same_run(tmp_path / "local", out)


def test_driver_killed_mid_run_then_rerun_gives_one_copy_of_every_row(ray_cluster, bad_archive, bundle, ray_opts,
                                                                      tmp_path):
    """A driver joining the module's instance by address is SIGKILLed after its second committed part."""
    (bad_archive / "broken.parquet").unlink()
    out = tmp_path / "ray"
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "docscore", "score", str(bad_archive), "--model", str(bundle), "--output", str(out),
           "--id-column", "doc_id", "--passthrough", "source", "--threads", "1", "--sort-window", "8",
           "--token-budget", "512", "--checkpoint-rows", "12", "--engine", "ray", "--ray-address", address]
    env = {**os.environ, "DOCSCORE_FAILPOINT": "part_committed:2"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / SUCCESS).exists() and list((out / "_docscore").rglob("part-*.staged"))
    summary = score_files_ray([bad_archive], bundle, out, ray_opts)
    assert summary.ok and summary.files >= 1
    score_files([bad_archive], bundle, tmp_path / "local", ray_opts)
    assert_same_run(tmp_path / "local", out)


def test_no_progress_fails_with_a_clear_message_instead_of_hanging(ray_cluster, archive, bundle, ray_opts,
                                                                  tmp_path):
    """Another job holds both CPUs, so no actor can start: the run fails after stall_timeout_s, saying what waited
    and what Ray had free."""
    from ray.util.placement_group import placement_group, remove_placement_group

    hog = placement_group([{"CPU": 2}])
    ray_cluster.get(hog.ready(), timeout=30)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RayStallError, match=r"no progress for 3 s.*Waiting: \d+ call\(s\) on 2 actor\(s\).*"
                                                r"Ray has available \(free/total\): CPU [\d.]+/2.*stall_timeout_s"):
            score_files_ray([archive], bundle, tmp_path / "out", ray_opts, stall_timeout_s=3)
        assert time.perf_counter() - t0 < 30
    finally:
        remove_placement_group(hog)
    assert not (tmp_path / "out" / SUCCESS).exists()


def test_a_hung_actor_call_fails_the_run_and_the_actor_is_killed(ray_cluster, archive, bundle, ray_opts, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("DOCSCORE_RAY_FAILPOINT", f"hang:{tmp_path / 'hung'}")
    # 10 s, not 3: on a loaded 2-core machine the read task and actor start-up alone can take 3 s, and the stall
    # would then fire before any call reached the actor (the hang this test is about).
    with pytest.raises(RayStallError, match="no progress for 10 s"):
        score_files_ray([archive], bundle, tmp_path / "out", ray_opts, stall_timeout_s=10)
    assert (tmp_path / "hung").exists()
    # no_leftover_actors checks that the hung actor was killed


def test_score_dataset_keeps_rows_and_order(ray_cluster, bundle, ray_opts):
    import ray.data

    table = make_table(40, seed=5).select(["doc_id", "text", "source"])
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    try:
        ds = score_dataset(ray.data.from_arrow(table).repartition(1), bundle, ray_opts, batch_rows=16)
        got = pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))
    finally:
        ctx.execution_options.preserve_order = False
    want = Scorer(bundle, ray_opts)(table)
    assert_same_rows(got.select(want.column_names), want)
    assert got.column("doc_id").to_pylist() == list(range(40))


def test_dead_address_fails_fast_with_a_clear_message(bundle, archive, tmp_path, capsys):
    from docscore.cli import main

    t0 = time.perf_counter()
    with pytest.raises(DeviceError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1"):
        score_files_ray([archive], bundle, tmp_path / "out", address="127.0.0.1:1", connect_timeout_s=5)
    rc = main(["score", str(archive), "--model", str(bundle), "--output", str(tmp_path / "out"), "--engine", "ray",
               "--ray-address", "127.0.0.1:1"])
    assert rc == 2 and "cannot reach a Ray cluster at 127.0.0.1:1" in capsys.readouterr().err  # DeviceError
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "out").exists(), "nothing is written before Ray answers"


def test_ray_engine_takes_the_same_writer_lock(bundle, archive, ray_opts, tmp_path):
    from docscore.batch.commit.lock import WriterLock
    from docscore.errors import LockHeldError

    out = tmp_path / "out"
    with WriterLock(out):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
            score_files_ray([archive], bundle, out, ray_opts)


_NO_RAY = """
import os, sys
sys.modules["ray"] = None  # as if Ray were not installed
from docscore.cli import main
out = os.environ["OUT"]
rc_local = main(sys.argv[1:] + ["--output", out + "-local"])
assert rc_local == 0, rc_local
assert "ray" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}, "local mode imported ray"
sys.exit(main(sys.argv[1:] + ["--output", out + "-ray", "--engine", "ray"]))
"""


def test_without_ray_local_works_and_ray_engine_says_how_to_install(bundle, archive, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _NO_RAY, "score", str(archive), "--model", str(bundle),
                           "--threads", "1", "--no-progress"], env={**os.environ, "OUT": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode not in (0, 1), proc.stderr[-2000:]  # 1 would be "files failed": this is a set-up error
    assert "pip install 'docscore[ray]'" in proc.stderr
    assert (tmp_path / "out-local" / SUCCESS).exists() and not (tmp_path / "out-ray").exists()


def test_actors_leave_a_cpu_for_reads():
    two = plan_workers(2, 0, "cpu")
    assert (two.workers, two.actor_cpus, two.threads, two.calls_per_actor) == (2, 0.5, 1, 1)
    assert two.workers * two.actor_cpus <= 2 - 1
    big = plan_workers(16, 0, "cpu", workers=4)
    assert (big.actor_cpus, big.threads) == (3.0, 3)
    assert plan_workers(16, 0, "cpu", workers=4, threads=1).threads == 1
    gpu = plan_workers(8, 2, "cuda")
    assert (gpu.workers, gpu.actor_gpus, gpu.calls_per_actor) == (2, 1.0, 2) and gpu.workers * gpu.actor_cpus <= 7
    with pytest.raises(DeviceError, match="no GPU"):
        plan_workers(8, 0, "cuda")
    with pytest.raises(ConfigError, match="at least 2"):
        plan_workers(1, 0, "cpu")
    with pytest.raises(ConfigError, match="characters"):
        RayOptions(tmp_dir="/tmp/" + "x" * 60)
    assert RayOptions().local and RayOptions(address="local").local and not RayOptions(address="auto").local


def test_pieces_split_at_row_groups_parts_and_batch_rows_from_the_resume_point():
    from docscore.batch.commit.committer import ShardPlan
    from docscore.batch.inputs import Shard
    from docscore.batch.ray.pieces import plan_pieces

    schema = pa.schema([pa.field("text", pa.string())])
    p = ShardPlan(Shard("/in/a.parquet", "a.parquet"), {}, 45, 4, 1, 12, schema, schema)  # part 0 committed
    pieces = plan_pieces(3, p, [10, 10, 25], 8, "s3://b/in/a.parquet", "http://127.0.0.1:9")
    assert [(x.start, x.stop) for x in pieces] == [(12, 20), (20, 24), (24, 32), (32, 36), (36, 44), (44, 45)]
    assert {(x.shard, x.uri, x.endpoint) for x in pieces} == {(3, "s3://b/in/a.parquet", "http://127.0.0.1:9")}


def test_a_piece_reads_exactly_its_rows_and_a_missing_file_is_an_error(tmp_path):
    from docscore.batch.ray.pieces import Piece, read_piece

    pq.write_table(make_table(30, seed=1), tmp_path / "a.parquet", row_group_size=7)
    cache: dict = {}
    got = [read_piece(Piece(0, str(tmp_path / "a.parquet"), "k=v/a.parquet", lo, hi), ["doc_id", "k"], 4, cache)
           for lo, hi in ((0, 7), (9, 14), (14, 30))]
    assert [t.column("doc_id").to_pylist() for t in got] == [list(range(7)), list(range(9, 14)),
                                                              list(range(14, 30))]
    assert set(got[0].column("k").to_pylist()) == {"v"}  # hive keys are columns on the actors too
    with pytest.raises(OSError):
        read_piece(Piece(1, str(tmp_path / "gone.parquet"), "gone.parquet", 0, 5), ["doc_id"], 4, cache)


def test_an_actor_reads_a_large_row_group_once_whatever_the_pieces(tmp_path, monkeypatch):
    """One row group cut into many pieces, an actor getting every other one (as with two actors): each piece
    continues the actor's open stream instead of decoding the row group again from its start (which made reads
    quadratic in the row-group size), and every piece still holds exactly its rows."""
    from docscore.batch.ray import pieces
    from docscore.batch.ray.pieces import Piece, read_piece

    opened = []

    class CountingStream(pieces.RowStream):
        def __init__(self, src, start, *a, **kw):
            opened.append(start)
            super().__init__(src, start, *a, **kw)

    monkeypatch.setattr(pieces, "RowStream", CountingStream)
    pq.write_table(make_table(400, seed=2), tmp_path / "a.parquet", row_group_size=300)  # groups of 300 and 100
    cache: dict = {}
    spans = [(lo, lo + 10) for lo in range(0, 400, 20)]  # every other 10-row piece
    got = [read_piece(Piece(0, str(tmp_path / "a.parquet"), "a.parquet", lo, hi), ["doc_id"], 16, cache)
           for lo, hi in spans]
    assert [t.column("doc_id").to_pylist() for t in got] == [list(range(lo, hi)) for lo, hi in spans]
    # one stream per row group (the second opened at its first row, skipping the first group undecoded): never
    # re-decoded from a row group's start for each piece
    assert opened == [0, 300]
    read_piece(Piece(0, str(tmp_path / "a.parquet"), "a.parquet", 5, 15), ["doc_id"], 16, cache)  # going back
    assert opened == [0, 300, 5]


def test_a_slow_piece_holds_back_the_others_within_the_bound(ray_cluster, archive, bundle, ray_opts, tmp_path,
                                                             monkeypatch):
    """One piece sleeps 4 s on one actor; the other actor finishes the pieces after it, but no more than the
    window allows: the driver stops sending pieces (backpressure) instead of buffering every later one. The outputs
    are the local engine's, byte for byte."""
    from docscore.batch.ray import files as ray_files

    seen = []

    class Recording(ray_files.OrderedCalls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(ray_files, "OrderedCalls", Recording)
    monkeypatch.setenv("DOCSCORE_RAY_FAILPOINT", f"slow:4:{tmp_path / 'slowed'}")
    summary = score_files_ray([archive], bundle, tmp_path / "ray", ray_opts, max_blocks_ahead=3)
    assert (tmp_path / "slowed").exists() and summary.ok and summary.rows == 100
    calls = seen[0]
    assert calls.window == 3 and calls.peak_outstanding == 3
    assert calls.peak_ahead == 2  # the other actor ran ahead of the slow piece, up to the bound and no further
    stats = summary.engine_stats  # the same counters, in the summary (and _docscore_summary.json)
    assert stats == {"engine": "ray", "workers": 2, "pieces": calls.sent, "max_blocks_ahead": 3,
                     "peak_outstanding": 3, "peak_ahead": 2}
    assert calls.sent >= 100 // 8
    assert json.loads((tmp_path / "ray" / "_docscore_summary.json").read_text())["engine_stats"] == stats
    monkeypatch.delenv("DOCSCORE_RAY_FAILPOINT")
    score_files([archive], bundle, tmp_path / "local", ray_opts)
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


def outputs(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_ray_with_inputs_bundle_and_output_on_s3_and_no_shared_directory(ray_cluster, s3, archive, bundle,
                                                                         ray_opts, tmp_path):
    """The actors read the inputs and the bundle from the S3 endpoint themselves (they get URIs and the endpoint,
    never a local path or a credential); the driver commits to S3. Same bytes as a local run on a local disk."""
    from s3server import CREDENTIALS

    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    model = s3.upload(bundle, bucket, "models/bundle")
    opts = ray_opts.replace(s3_endpoint=s3.endpoint)
    summary = score_files_ray([src + "/"], model, f"s3://{bucket}/scores", opts)
    assert summary.ok and summary.rows == 100 and summary.output_dir == f"s3://{bucket}/scores"
    score_files([archive], bundle, tmp_path / "local", ray_opts)
    want = outputs(tmp_path / "local")
    keys = s3.keys(bucket, "scores/")
    got = {k[len("scores/"):]: s3.get(bucket, k) for k in keys if k.endswith(".parquet")}
    assert got == want
    assert "scores/_SUCCESS" in keys and not [k for k in keys if "/_docscore/" in k and not k.endswith("/")
                                              and "/_docscore/reuse/" not in k]
    manifest = json.loads(s3.get(bucket, "scores/_docscore_run.json"))
    assert manifest["bundle"]["path"] == model
    assert manifest["shards"]["2024/b.parquet"]["input"] == f"{src}/2024/b.parquet"
    for key in keys:
        if not key.endswith(".parquet") and not key.endswith("/"):
            body = s3.get(bucket, key)  # records and score files (Parquet): searched as bytes
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in body
            assert CREDENTIALS["AWS_ACCESS_KEY_ID"].encode() not in body
