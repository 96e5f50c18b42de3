"""Labelled datasets (Parquet or CSV) for training and evaluation, validated before any training starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from docscore.errors import InputDataError

SUPPORTED = (".parquet", ".pq", ".csv", ".tsv")


@dataclass
class LabelledData:
    """Texts and their raw labels, as read from one file."""

    path: str
    texts: list[str]
    labels: list  # str | int | float | list[str|int] per row
    kind: str  # "single" | "multi" | "numeric"

    def __len__(self) -> int:
        return len(self.texts)


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a Parquet or CSV file into an Arrow table, with a clear error when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputDataError("file not found", path=path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputDataError(f"unsupported file type {suffix!r}; use Parquet or CSV", path=path)
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True)
        # an empty CSV cell is a missing value, for labels as for texts
        convert = pcsv.ConvertOptions(strings_can_be_null=True)
        return pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise InputDataError(f"cannot read file: {e}", path=path) from e


def _label_kind(col: pa.ChunkedArray) -> str:
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "multi"
    if pa.types.is_floating(t):
        return "numeric"
    return "single"


def load_labelled(path: str | os.PathLike, text_column: str = "text", label_column: str = "label") -> LabelledData:
    """Read and validate a labelled file: columns present, non-empty, no null/empty texts or null labels.

    Multi-label rows are lists (Parquet list columns, or CSV cells like ``a|b``... are *not* guessed: use Parquet).
    """
    table = read_table(path)
    present = table.column_names
    for col in (text_column, label_column):
        if col not in present:
            raise InputDataError(
                f"column {col!r} not found; columns present: {', '.join(present)}. "
                f"Choose with --{'text' if col == text_column else 'label'}-column",
                path=path, column=col,
            )
    if table.num_rows == 0:
        raise InputDataError("the dataset is empty (no rows)", path=path)
    texts = table.column(text_column)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise InputDataError(f"text column must hold strings, found {texts.type}", path=path, column=text_column)
    bad = pc.or_(pc.is_null(texts), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(texts, ""))), 0))
    bad_rows = pc.indices_nonzero(bad).to_pylist()
    if bad_rows:
        raise InputDataError(f"{len(bad_rows)} row(s) have a null or empty text", path=path, column=text_column,
                             rows=bad_rows)
    labels = table.column(label_column)
    null_rows = pc.indices_nonzero(pc.is_null(labels)).to_pylist()
    if null_rows:
        raise InputDataError(f"{len(null_rows)} row(s) have a null label", path=path, column=label_column,
                             rows=null_rows)
    kind = _label_kind(labels)
    values = labels.to_pylist()
    if kind == "multi":
        empty = [i for i, v in enumerate(values) if any(x is None for x in v)]
        if empty:
            raise InputDataError("multi-label lists contain nulls", path=path, column=label_column, rows=empty)
    return LabelledData(str(path), texts.to_pylist(), values, kind)


def label_vocabulary(data: LabelledData) -> list[str]:
    """Sorted distinct labels (as strings); numeric labels sort numerically."""
    if data.kind == "multi":
        raw = {x for row in data.labels for x in row}
    else:
        raw = set(data.labels)
    try:
        return [str(x) for x in sorted(raw)]
    except TypeError:
        return sorted(str(x) for x in raw)


def check_labels_known(data: LabelledData, labels: list[str], train_path: str, column: str) -> None:
    """A label in eval data that training never saw is an error (its metrics would be meaningless)."""
    known = set(labels)
    unseen_rows, unseen = [], set()
    for i, v in enumerate(data.labels):
        vals = v if data.kind == "multi" else [v]
        missing = {str(x) for x in vals} - known
        if missing:
            unseen_rows.append(i)
            unseen |= missing
    if unseen_rows:
        raise InputDataError(
            f"label(s) {sorted(unseen)} do not occur in the training data {train_path}",
            path=data.path, column=column, rows=unseen_rows,
        )
