"""Typed errors. Each says what was wrong, where (file / row / column) and what to do."""

from __future__ import annotations


class DocscoreError(Exception):
    """Base class of every error docscore raises on purpose; the CLI prints it and exits non-zero.

    Exit codes (README, "Running it every night"): 0 success; 1 partial (some files failed, were refused or
    left stale, or the row error rate is above ``--max-error-rate``); 2 refused options or input (this class);
    3 parity gate failed; 4 bad bundle; 5 I/O error on the output; 6 another run holds the output's lock; 7 this
    run lost the output's lock to another run and stopped.
    """

    exit_code = 2


class InputDataError(DocscoreError):
    """A dataset or archive file is missing, unreadable or malformed.

    Args:
        message: what is wrong and what to do.
        path: the file concerned.
        column: the column concerned, if any.
        rows: the offending row numbers (0-based), if any; at most a few are shown.
    """

    def __init__(self, message: str, *, path=None, column: str | None = None, rows=None):
        self.path = str(path) if path is not None else None
        self.column = column
        self.rows = list(rows) if rows is not None else None
        where = []
        if self.path:
            where.append(f"file {self.path}")
        if column:
            where.append(f"column {column!r}")
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:10])
            more = f" (+{len(self.rows) - 10} more)" if len(self.rows) > 10 else ""
            where.append(f"rows {shown}{more}")
        super().__init__(f"{message}" + (f" [{'; '.join(where)}]" if where else ""))


class FailFastError(InputDataError):
    """``--fail-fast`` stopped the run at the first input file that cannot be scored; the files finished before it
    are committed. Exit 1, like a run that scores the others and reports the failure at the end."""

    exit_code = 1


class CheckpointError(DocscoreError):
    """A checkpoint directory is missing, incomplete or holds unsafe files."""


class BundleError(DocscoreError):
    """A bundle is missing files, was tampered with, or does not match its manifest."""

    exit_code = 4


class ParityError(DocscoreError):
    """An exported variant disagrees with PyTorch beyond its tolerance; nothing was written."""

    exit_code = 3


class DeviceError(DocscoreError):
    """The requested device / execution provider is not available or was not actually used."""


class ConfigError(DocscoreError):
    """Invalid options or configuration."""


class ExportError(DocscoreError):
    """The exporter could not build a graph or a requested variant; nothing was written."""


class OutputError(DocscoreError):
    """The output cannot be written: read-only path, missing permission, full disk. Finished files are kept,
    so a rerun once the cause is fixed resumes.

    Args:
        message: what failed and what to do.
        path: the file or directory concerned.
    """

    exit_code = 5

    def __init__(self, message: str, *, path=None):
        self.path = str(path) if path is not None else None
        super().__init__(message)

    @classmethod
    def from_os(cls, e: OSError, action: str = "write", path=None) -> "OutputError":
        """A one-line message naming the path (``e.filename`` when the OS gave one, else ``path``) and what to
        do."""
        import errno
        import os
        import re

        code = e.errno
        if code is None:  # pyarrow puts the errno in its text: "Cannot create directory '/x'. Detail: [errno 30] ..."
            found = re.search(r"\[errno (\d+)\]", str(e))
            code = int(found.group(1)) if found else None
        quoted = re.search(r"'(/[^']*)'", str(e))
        path = e.filename or (quoted.group(1) if quoted else None) or path or ""
        reason = os.strerror(code) if code else " ".join(str(e).split())
        hint = {errno.ENOSPC: "free space and rerun: finished files are kept and the run resumes",
                errno.EDQUOT: "free space and rerun: finished files are kept and the run resumes",
                errno.EROFS: "pick a writable --output",
                errno.EACCES: "check the permissions or pick another --output",
                errno.EPERM: "check the permissions or pick another --output"}.get(code, "fix it and rerun: "
                                                                                    "the run resumes")
        where = f" {path}" if path else ""
        return cls(f"cannot {action}{where}: {reason}; {hint}", path=path or None)


class LockHeldError(DocscoreError):
    """Another run holds the output directory's writer lock."""

    exit_code = 6


class LockLostError(DocscoreError):
    """Another run took over the output's writer lock while this run held it (this run was paused, or its clock was
    behind, past the stale limit). This run stopped before its next commit step and published nothing more; the
    new holder finishes the output. Exit 7."""

    exit_code = 7
