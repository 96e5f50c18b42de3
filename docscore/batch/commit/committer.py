"""How docscore commits outputs: one component, :class:`OutputCommitter`, that every engine feeds.

An engine (local threads, Ray) only *produces* scored rows: Arrow tables, in input order, shard by shard. It tells
the committer where a shard starts, hands it the tables, says where each checkpoint part ends and whether the shard
finished or failed. Everything that makes outputs whole, once and resumable happens here, over a ``pyarrow.fs``
file system, so the same code runs on a local disk and on an object store (S3, GCS, ...)::

    committer = OutputCommitter(out, options)        # OUT: a storage.Location (local dir or s3://bucket/prefix)
    committer.setup_job()                            # bucket exists, OUT/_docscore/lock.json taken (one writer)
    state = committer.open_manifest(bundle, options, overwrite)   # manifest loaded or created, leftovers removed
    committer.start(summary)
    for shard in todo:                               # an engine, any number of threads: calls are in this order
        committer.begin_shard(plan)                  #   journal: "pending"
        committer.write(table, stats)                #   rows, in input order, any chunking
        committer.commit_part(part)                  #   every checkpoint_rows input rows: a committed part
        committer.finish_shard(sha256)               #   output published, journal: "done" (the commit record)
        # or committer.fail_shard(shard, fp, error)  #   journal: "failed"; the other shards go on
    committer.commit_job(shards)                     # manifest rewritten, summary written, _SUCCESS when healthy
    committer.close()                                # lock released (also on failure)

The protocol, and why it survives a kill at any point:

- **Parts.** A shard is written in parts of ``checkpoint_rows`` input rows. A part is written to a local
  in-progress file (on a local disk under ``OUT/_docscore/staging/``, on an object store in a local temporary
  folder), then renamed (disk) or uploaded whole (object store: a PUT or completed multipart upload is atomic) to
  ``OUT/_docscore/staging/<rel>.parts/part-NNNNN.staged``. A rerun resumes after the last committed part.
- **Outputs.** When every part is committed they are copied, row group by row group, into one file that is renamed
  or uploaded to its final key ``OUT/<rel>``: readers see the old output or the new one, never a mix. A shard of
  one part is published directly.
- **The journal is the commit record.** An output counts as done only once its ``done`` event is in the manifest
  journal (:class:`~docscore.batch.commit.state.RunState`); a kill between the publish and the event redoes the shard,
  which writes the same bytes again.
- **Same bytes, whatever the engine.** Row groups are cut here, at fixed multiples of :data:`ROW_GROUP_ROWS` within
  a part, never where an engine's tables happen to end: the local engine's windows and Ray's blocks give
  byte-identical files.
- **One writer.** ``OUT/_docscore/lock.json`` is an exclusive create (``O_EXCL`` on a disk, a conditional PUT
  ``If-None-Match: *`` on S3), refreshed by a heartbeat and taken over when its owner is dead
  (:class:`~docscore.batch.commit.lock.WriterLock`).
- **Fenced.** Every step that changes ``OUT`` (a part, an output, a journal event, the manifest, the summary,
  ``_SUCCESS``, removing staging) first proves the run still holds the lock (it reads the lock and compares its
  token). A run that was taken over (paused past the stale limit) stops at its next step with
  :class:`~docscore.errors.LockLostError` and changes nothing more: its leftovers are the new holder's to clean.
- **Nothing half-written is data.** Everything besides the outputs starts with ``_`` (Spark, Hive and
  ``pyarrow.dataset`` skip it) and no staged name ends in ``.parquet`` (the ``**/*.parquet`` globs of polars and
  DuckDB never count it). Each run first removes what killed runs left (:class:`~docscore.batch.commit.staging.Staging`).

The committer is driven from one thread at a time (the local engine's writer thread, Ray's driver thread).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from docscore import storage
from docscore.batch.commit.lock import WriterLock
from docscore.batch.inputs import InputFile, Shard
from docscore.batch.options import ScoreOptions
from docscore.batch import scorefiles
from docscore.batch.reuse import Reuse
from docscore.batch.scorefiles import Keys, ScoreFileWriter, score_schema
from docscore.batch.scorer import Scorer, WindowStats
from docscore.batch.commit.layout import SUCCESS, SUMMARY
from docscore.batch.commit.state import RunState, write_json_atomic
from docscore.errors import FailFastError, InputDataError, LockLostError, OutputError
from docscore.storage import Location

if TYPE_CHECKING:
    from docscore.batch.summary import Progress, RunSummary

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 16_384  # output rows per Parquet row group (the last one of a part holds the rest); the rows
# waiting for their row group are the writer's only buffer, so this bounds its memory with wide passthrough columns


@dataclass(frozen=True)
class ShardPlan:
    """What the committer needs to know about a shard before its first row: sizes, schema, where to resume."""

    shard: Shard
    fingerprint: dict  # the input's fingerprint (its sha256 is added by finish_shard)
    rows: int  # input rows
    parts: int  # checkpoint parts
    done: int  # parts committed by an earlier, interrupted run: scoring resumes after them
    checkpoint_rows: int
    schema: pa.Schema  # the output's
    input_schema: pa.Schema  # the input columns read

    @property
    def start_row(self) -> int:
        """The first input row still to score."""
        return self.done * self.checkpoint_rows

    def part_rows(self, part: int) -> int:
        return min(self.checkpoint_rows, self.rows - part * self.checkpoint_rows)

    @property
    def columns(self) -> dict[str, str]:
        return {f.name: str(f.type) for f in self.input_schema}


def plan_shard(shard: Shard, fingerprint: dict, src: InputFile, scorer: Scorer, options: ScoreOptions,
               state: RunState) -> ShardPlan:
    """Check a shard's columns and plan its parts; ``done`` counts the parts an earlier run committed.

    Raises:
        InputDataError: a column the options name is missing.
    """
    scorer.check_columns(src.schema, path=shard.name)
    input_schema = pa.schema([src.schema.field(c) for c in scorer.input_columns()])
    rows = src.num_rows
    parts = max(1, -(-rows // options.checkpoint_rows))
    done = state.staging.committed_parts(shard.rel, parts) if parts > 1 else 0
    return ShardPlan(shard, fingerprint, rows, parts, done, options.checkpoint_rows,
                     scorer.output_schema(input_schema), input_schema)


def read_error(shard: Shard, e: BaseException) -> InputDataError:
    """An input that cannot be read, as the typed error the summary and manifest record (naming the file)."""
    if isinstance(e, InputDataError):
        return e
    return InputDataError(f"cannot read: {type(e).__name__}: {e}", path=shard.name)


READ_ERRORS = (OSError, pa.ArrowException, InputDataError)  # what fails one shard, not the run


class OutputCommitter:
    """Commits scored tables into ``OUT``: whole outputs, once each, resumable after a kill (module docstring).

    Args:
        out: the output location.
        options: the run's options (``fail_fast``: raise at the first shard that fails instead of recording it
            and going on).
        progress: callbacks for rows and files done (the CLI's bars).
    """

    def __init__(self, out: Location, options: ScoreOptions, progress: "Progress | None" = None):
        from docscore.batch.summary import Progress

        self.out = out
        self.options = options
        self.progress = progress or Progress()
        self.state: RunState | None = None
        self.summary: "RunSummary | None" = None
        self._lock: WriterLock | None = None
        self.cleaned = 0  # files left by killed runs, removed by open_manifest
        self._plan: ShardPlan | None = None
        self._part = 0  # the part being written
        self._writer: pq.ParquetWriter | None = None
        self._tmp: str | None = None  # its in-progress file
        self._pending: list[pa.Table] = []  # rows not yet in a row group
        self._pending_rows = 0
        self._scores: ScoreFileWriter | None = None  # the shard's score file (options.reuse)
        self.reuse: Reuse | None = None  # what this output scored before (open_reuse)

    # --- the job ------------------------------------------------------------------------------------------------

    def setup_job(self) -> None:
        """Check the bucket, create ``OUT`` and take its writer lock.

        Raises:
            LockHeldError: another run writes ``OUT``. OutputError: ``OUT`` cannot be created.
        """
        out = self.out
        try:
            bucket = storage.missing_bucket(out)
            if bucket:
                raise OutputError(f"cannot write {out.uri}: the bucket {bucket} does not exist (docscore never "
                                  "creates buckets); create it or pick another --output", path=out.uri)
            out.fs.create_dir(out.path, recursive=True)
            self._lock = WriterLock(out.path, out.fs, name=out.uri).acquire()
        except OSError as e:
            raise OutputError.from_os(e, "create", path=out.uri) from e

    def open_manifest(self, bundle: dict, options: dict, overwrite: bool) -> RunState:
        """Load (or create) the run manifest, invalidate ``_SUCCESS`` and remove what killed runs left; the
        committed parts of unfinished shards are kept for the resume."""
        self.state = RunState.open(self.out, bundle, options, overwrite, fence=self._fence)
        self._fence()
        storage.delete(self.out.fs, self.out.join(SUCCESS))
        self.cleaned = len(self.state.staging.clean(
            keep={rel for rel, e in self.state.shards.items() if e.get("status") == "pending"}))
        return self.state

    def _score_files(self) -> set[str]:
        """The score files the manifest's entries name (relative to OUT)."""
        return {e["reuse"] for e in self.state.shards.values() if scorefiles.is_score_file(e.get("reuse"))}

    def open_reuse(self, scores: pa.Schema) -> Reuse:
        """Read the keys of the score files in ``OUT/_docscore/reuse/`` (:mod:`docscore.batch.reuse`): those the
        manifest names, and those a killed run published or retired (each is whole, and tagged with the bundle and
        options it was written for). They stay until this run ends, whatever it replaces or prunes meanwhile."""
        self.reuse = Reuse.open(self.out, scorefiles.listed(self.out), scores,
                                scorefiles.output_tag(self.state.header))
        s = self.summary
        s.reuse_index_rows, s.reuse_index_bytes, s.reuse_load_s = (len(self.reuse.index), self.reuse.index.nbytes,
                                                                    self.reuse.load_s)
        return self.reuse

    def start(self, summary: "RunSummary") -> None:
        """The summary that shard events are counted in."""
        self.summary = summary

    def commit_job(self, shards: list[Shard]) -> None:
        """Once every shard of the run is done: remove the staging area and, when the run is healthy, write
        ``_SUCCESS`` (the last write of a run)."""
        state = self.state
        if all(state.shards.get(s.rel, {}).get("status") == "done" for s in shards):
            state.staging.remove_all()
            if self.summary.ok:
                self._fence()
                storage.write_bytes(self.out.fs, self.out.join(SUCCESS), b"")

    def record_state(self) -> None:
        """Fold the journal into the manifest and write the summary (each one whole object / one rename)."""
        self.state.compact()
        self._fence()
        scorefiles.clean(self.out, self._score_files(), self._fence)  # those replaced or pruned by this run
        write_json_atomic(self.out.join(SUMMARY), self.summary.to_dict(), self.out.fs)

    def lost_error(self) -> LockLostError | None:
        """The error to raise when this run lost its lock (the heartbeat saw it, or the lock says so now), else
        None: an I/O error after a takeover (the new holder cleaned this run's staging) is the loss, not the disk."""
        try:
            self._fence()
        except LockLostError as e:
            return e
        except OSError:
            pass
        return None

    def _fence(self, read: bool = True) -> None:
        """Prove this run still holds the output's lock (:meth:`WriterLock.check`); raises LockLostError."""
        if self._lock is not None:
            self._lock.check(read)

    def close(self) -> None:
        """Drop the shard in progress (a rerun redoes it), remove the local folder of files being written (object
        stores) and release the lock (if it is still this run's)."""
        self.abort()
        if self.state is not None:
            self.state.close()
            self.state.staging.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- a shard ------------------------------------------------------------------------------------------------

    def begin_shard(self, plan: ShardPlan) -> None:
        """Start a shard: journal it as pending (with its fingerprint), resume at part ``plan.done``."""
        if self._plan is not None:
            raise RuntimeError(f"begin_shard({plan.shard.rel}) while {self._plan.shard.rel} is open")
        self._plan, self._part = plan, plan.done
        if self.options.reuse:
            self._scores = ScoreFileWriter(self.state.staging, plan.shard.rel, plan.parts, plan.done,
                                           score_schema(plan.schema, self.options.output_columns()),
                                           scorefiles.output_tag(self.state.header))
        self.state.record(plan.shard.rel, {"input": plan.shard.source, "fingerprint": plan.fingerprint,
                                           "status": "pending", "rows": plan.rows, "parts": plan.parts})

    def write(self, table: pa.Table, stats: WindowStats | None = None, keys: Keys | None = None) -> None:
        """Append scored rows (in input order, any number of rows) to the part being written.

        Args:
            keys: the rows' text digests, for the shard's score file (None: the shard gets none).
        """
        self._fence(read=False)  # the heartbeat saw another holder: stop now, not at the end of the part
        if self._scores is not None:
            with self._naming_file():
                self._scores.write(table, keys)
        if table.num_rows:
            self._pending.append(table)
            self._pending_rows += table.num_rows
            with self._naming_file():
                while self._pending_rows >= ROW_GROUP_ROWS:
                    self._flush(ROW_GROUP_ROWS)
        if stats is not None:
            self.summary.add(stats)
        self.progress.rows(table.num_rows)

    def commit_part(self, part: int) -> None:
        """The rows of ``part`` are all written: make it a committed part (or, for a one-part shard, the output)."""
        plan = self._plan
        if part != self._part:
            raise RuntimeError(f"{plan.shard.rel}: part {part} committed while part {self._part} is being written")
        self._fence()  # before its last rows are even written
        with self._naming_file():
            if self._pending_rows:
                self._flush(self._pending_rows)
            if self._writer is None:  # an empty input: an empty output with the right schema
                self._open()
            self._writer.close()
            staging = self.state.staging
            if self._scores is not None:  # committed first: a committed part always has its score part
                self._scores.commit_part(part)
            if plan.parts == 1:
                staging.publish(self._tmp, plan.shard.rel)
            else:
                staging.commit_part(self._tmp, plan.shard.rel, part)
        self._writer = self._tmp = None
        self._part = part + 1
        failpoint("part_committed")

    def finish_shard(self, sha256: str | None = None) -> None:
        """Every part is committed: publish the output and journal the shard as done (its commit record).

        Args:
            sha256: the input's content digest, computed while it was read (recorded for change detection).
        """
        plan, state = self._plan, self.state
        if self._part != plan.parts:
            raise RuntimeError(f"{plan.shard.rel}: finished after {self._part} of {plan.parts} parts")
        rel = plan.shard.rel
        scores = None
        if self._scores is not None:
            with self._naming_file():
                scores = self._scores.publish()
        if plan.parts > 1:
            self._merge_parts()
        failpoint("output_committed")
        errors = pq.read_table(state.path(rel), columns=["error"], filesystem=state.fs).column("error")
        fingerprint = {**plan.fingerprint, "sha256": sha256} if sha256 else plan.fingerprint
        state.record(rel, {"input": plan.shard.source, "fingerprint": fingerprint, "status": "done",
                           "rows": plan.rows, "parts": plan.parts, "errors": len(errors) - errors.null_count,
                           "columns": plan.columns, **({"reuse": scores} if scores else {})})
        state.staging.discard(rel)
        self._plan = self._scores = None
        self.summary.files += 1
        self.summary.scored.append(rel)
        self.progress.file_done(rel, "done")
        failpoint("shard_done")

    def fail_shard(self, shard: Shard, fingerprint: dict | None, error: BaseException) -> None:
        """A shard could not be read: drop what was written of it, journal it as failed (``fail_fast``: raise).
        Its committed parts are kept only while its status is pending, so the next run starts it over."""
        if self._plan is not None and self._plan.shard == shard:
            self.abort()
        self.progress.file_done(shard.rel, "failed")
        record_failure(self.state, self.summary, shard, fingerprint, read_error(shard, error), self.options)

    def abort(self) -> None:
        """Throw away the part being written (never published; the next run's clean-up removes any leftover)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        # after a takeover, a file in OUT's staging is left for the new holder (its clean-up removes it)
        if self._tmp is not None and not (self._lock is not None and self._lock.lost and self.state.staging.local):
            try:
                self.state.staging.work_fs.delete_file(self._tmp)
            except OSError:
                pass
        if self._scores is not None:
            self._scores.abort()
        self._writer = self._tmp = self._plan = self._scores = None
        self._pending, self._pending_rows = [], 0

    # --- files --------------------------------------------------------------------------------------------------

    def _open(self) -> None:
        self._fence(read=False)
        staging = self.state.staging
        self._tmp = staging.inprogress(self._plan.shard.rel, f"part-{self._part:05d}")
        self._writer = pq.ParquetWriter(self._tmp, self._plan.schema, filesystem=staging.work_fs)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` pending rows as one row group."""
        rows = pa.concat_tables(self._pending).cast(self._plan.schema)
        group, rest = rows.slice(0, n), rows.slice(n)
        if self._writer is None:
            self._open()
        self._writer.write_table(group.combine_chunks(), row_group_size=n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _merge_parts(self) -> None:
        """Copy the committed parts, row group by row group, into the shard's output (via an in-progress file)."""
        staging, plan = self.state.staging, self._plan
        rel = plan.shard.rel
        self._tmp = staging.inprogress(rel, "output")
        with self._naming_file():
            with pq.ParquetWriter(self._tmp, plan.schema, filesystem=staging.work_fs) as writer:
                for part in range(plan.parts):
                    pf = pq.ParquetFile(staging.fs.open_input_file(staging.part(rel, part)))
                    for rg in range(pf.num_row_groups):
                        writer.write_table(pf.read_row_group(rg))
            staging.publish(self._tmp, rel)
        self._tmp = None

    @contextmanager
    def _naming_file(self):
        """An OS error (e.g. a full disk) names the file being written."""
        try:
            yield
        except OSError as e:
            if not e.filename and self._tmp:
                e.filename = self._tmp
            raise


# --- fault injection for the resume and lock tests: DOCSCORE_FAILPOINT="<name>:<n>" kills the process (SIGKILL)
# on the n-th time it reaches <name>; "<name>:<n>:wait=<path>" instead waits there until <path> exists (at most
# 120 s). Names: part_committed, output_committed, shard_done.
_FAILPOINT_HITS: dict[str, int] = {}


def record_failure(state: RunState, summary: "RunSummary", shard: Shard, fp: dict | None, error: Exception,
                   options: ScoreOptions) -> None:
    """Report an unreadable shard and mark it failed; with ``fail_fast``, raise."""
    log.error("%s", error)
    summary.files_failed += 1
    summary.failed.append({"path": shard.name, "error": str(error)})
    state.record(shard.rel, {"input": shard.source, "fingerprint": fp, "status": "failed",
                             "error": str(error)})
    if options.fail_fast:
        raise FailFastError(f"--fail-fast: stopped at the first input that cannot be scored: {error}; the files "
                            "finished before it are committed, a rerun resumes")


def failpoint(name: str) -> None:
    spec = os.environ.get("DOCSCORE_FAILPOINT")
    if not spec or not spec.startswith(name + ":"):
        return
    _, count, *action = spec.split(":", 2)
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] != int(count):
        return
    if action and action[0].startswith("wait="):
        deadline = time.monotonic() + 120
        while not os.path.exists(action[0][5:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.SIGKILL)
