"""Batch scoring: Parquet archives → ONNX Runtime → one scored Parquet file per input shard.

Torch-free: a scoring host needs only ``onnxruntime``, ``tokenizers``, ``pyarrow`` (and ``polars`` for reports).

- :class:`ScoreOptions` (``options.py``): every knob, shared by the CLI and the API.
- :class:`Scorer` (``scorer.py``): Arrow batches in, scored Arrow tables out; reusable in Ray / Spark workers.
- :func:`score_files` (``runner.py``): the resumable local runner behind ``docscore score``.
- ``commit/``: the output promise: :class:`~docscore.batch.commit.committer.OutputCommitter`, which every engine
  feeds with ordered Arrow tables (parts, whole outputs, the manifest journal, ``_SUCCESS``), and its building
  blocks: the output's layout, writer lock, staging no reader sees, run manifest, input change detection.
- ``reuse.py`` / ``scorefiles.py``: score reuse: rows whose text this output scored before are copied, not inferred.
- ``ray/``: the same scoring on Ray actors, which read inputs and the bundle themselves (paths or URIs).
- ``summary.py``: :class:`RunSummary`, what a run did (counted by every engine and the committer), and
  :class:`Progress`, the callbacks a front end passes in.
- ``policy.py``: what a night does with new, unchanged, changed and deleted inputs, and its health figures.
- ``inputs.py``: discovery (``_``/``.`` paths skipped), hive partition keys and nested fields as columns.
- :func:`summarize` (``report.py``): label distribution and confidence of a finished run (``docscore report``).
"""

from docscore.batch.options import ScoreOptions
from docscore.batch.scorer import Scorer

__all__ = ["ScoreOptions", "Scorer", "score_files", "RunSummary", "summarize"]


def __getattr__(name):  # the runner and report pull in threading / polars only when asked for
    if name in ("score_files", "RunSummary"):
        from docscore.batch import runner

        return getattr(runner, name)
    if name == "summarize":
        from docscore.batch.report import summarize

        return summarize
    raise AttributeError(name)
