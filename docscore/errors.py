"""Typed errors. Each says what was wrong, where (file / row / column) and what to do."""

from __future__ import annotations


class DocscoreError(Exception):
    """Base class of every error docscore raises on purpose; the CLI prints it and exits non-zero."""

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


class CheckpointError(DocscoreError):
    """A checkpoint directory is missing, incomplete or holds unsafe files."""


class BundleError(DocscoreError):
    """A bundle is missing files, was tampered with, or does not match its manifest."""


class ParityError(DocscoreError):
    """An exported variant disagrees with PyTorch beyond its tolerance; nothing was written."""

    exit_code = 3


class DeviceError(DocscoreError):
    """The requested device / execution provider is not available or was not actually used."""


class ConfigError(DocscoreError):
    """Invalid options or configuration."""


class ExportError(DocscoreError):
    """The exporter could not build a graph or a requested variant; nothing was written."""
