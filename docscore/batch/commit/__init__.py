"""The output promise, in one package: every output whole or absent, committed once, resumable after a kill at any
point, one writer at a time, nothing a reader's glob counts as data but finished outputs.

Engines (local threads, Ray) only produce ordered Arrow tables and hand them to :mod:`.committer`; its docstring
holds the lifecycle (``setup_job → open_manifest → begin_shard → write → commit_part → finish_shard | fail_shard →
commit_job → close``) and why each step survives a kill.

- :mod:`.layout` — every name docscore writes under ``OUT`` and the file-system helpers the others share.
- :mod:`.lock` — the writer lock: exclusive create, heartbeat, takeover of a dead or stale holder, fencing.
- :mod:`.staging` — committed parts and in-progress files, publishing into place, cleaning killed runs' leftovers.
- :mod:`.state` — the run manifest and its journal: what was scored, from which inputs, with which bundle.
- :mod:`.fingerprint` — input change detection (stat fingerprint, footer hash, whole-file digest while reading).
- :mod:`.committer` — :class:`~docscore.batch.commit.committer.OutputCommitter`, the one component engines feed.

The run summary the committer fills in is :mod:`docscore.batch.summary`.
"""
