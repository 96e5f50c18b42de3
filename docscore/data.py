"""Labelled datasets (Parquet or CSV) for training and evaluation, validated before any training starts.

Texts and labels stay Arrow arrays: a file of millions of rows costs its Arrow bytes, not millions of Python
objects (training tokenises each batch when it is drawn, see :mod:`docscore.train.dataset`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from docscore.errors import InputDataError

SUPPORTED = (".parquet", ".pq", ".csv", ".tsv")


@dataclass
class LabelledData:
    """Texts and their raw labels, as read from one file.

    Args:
        path: where the rows came from (a held-out split says so in a suffix).
        texts: one non-empty string per row (``large_string``, no nulls).
        labels: the raw label per row: string/int (single), list (multi) or float (numeric); no nulls.
        kind: ``single`` | ``multi`` | ``numeric``.
    """

    path: str
    texts: pa.Array
    labels: pa.Array
    kind: str

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray, suffix: str = "") -> "LabelledData":
        """The given rows, in the given order."""
        idx = pa.array(np.asarray(rows, dtype=np.int64))
        return LabelledData(self.path + suffix, self.texts.take(idx), self.labels.take(idx), self.kind)


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet or CSV file into an Arrow table, with a clear error when it cannot be read.

    Args:
        path: the file.
        columns: read only these columns of a Parquet file (each must exist); CSV files are read whole.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError("file not found", path=path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputDataError(f"unsupported file type {suffix!r}; use Parquet or CSV", path=path)
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            if columns is not None:
                present = pq.read_schema(path).names
                columns = [c for c in columns if c in present]  # the caller names what is missing
            return pq.read_table(path, columns=columns)
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


def _rows(mask) -> list[int]:
    return pc.indices_nonzero(mask).to_pylist()


def load_labelled(path: str | os.PathLike, text_column: str = "text", label_column: str = "label") -> LabelledData:
    """Read and validate a labelled file: columns present, non-empty, no null/empty texts or null labels.

    Multi-label rows are lists (Parquet list columns, or CSV cells like ``a|b``... are *not* guessed: use Parquet).
    """
    table = read_table(path, columns=[text_column, label_column])
    present = table.column_names
    if str(path).lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        present = pq.read_schema(path).names
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
    bad_rows = _rows(bad)
    if bad_rows:
        raise InputDataError(f"{len(bad_rows)} row(s) have a null or empty text", path=path, column=text_column,
                             rows=bad_rows)
    labels = table.column(label_column)
    null_rows = _rows(pc.is_null(labels))
    if null_rows:
        raise InputDataError(f"{len(null_rows)} row(s) have a null label", path=path, column=label_column,
                             rows=null_rows)
    kind = _label_kind(labels)
    labels = labels.combine_chunks()
    if kind == "multi":
        nulls = pc.is_null(pc.list_flatten(labels))
        if pc.any(nulls).as_py():
            parents = pc.list_parent_indices(labels)
            empty = sorted(set(pc.filter(parents, nulls).to_pylist()))
            raise InputDataError("multi-label lists contain nulls", path=path, column=label_column, rows=empty)
    texts = texts.cast(pa.large_string()).combine_chunks()  # large offsets: no 2 GiB limit per file
    return LabelledData(str(path), texts, labels, kind)


def _values(data: LabelledData) -> pa.Array:
    """The label values, one per row (single) or flattened (multi)."""
    return pc.list_flatten(data.labels) if data.kind == "multi" else data.labels


def label_vocabulary(data: LabelledData) -> list[str]:
    """Sorted distinct labels (as strings); numeric labels sort numerically."""
    raw = set(pc.unique(_values(data)).to_pylist())
    try:
        return [str(x) for x in sorted(raw)]
    except TypeError:
        return sorted(str(x) for x in raw)


def label_ids(data: LabelledData, labels: list[str]) -> np.ndarray:
    """The index in ``labels`` of every label value (flattened for multi-label); -1 where it is not in ``labels``."""
    values = _values(data)
    uniques = pc.unique(values)
    index = {label: i for i, label in enumerate(labels)}
    ids_of_unique = np.array([index.get(str(u), -1) for u in uniques.to_pylist()], dtype=np.int64)
    return ids_of_unique[pc.index_in(values, value_set=uniques).to_numpy(zero_copy_only=False)]


def check_labels_known(data: LabelledData, labels: list[str], train_path: str, column: str) -> None:
    """A label in eval data that training never saw is an error (its metrics would be meaningless)."""
    ids = label_ids(data, labels)
    unknown = ids < 0
    if not unknown.any():
        return
    values = _values(data)
    unseen = sorted({str(v) for v in pc.filter(values, pa.array(unknown)).to_pylist()})
    rows = np.arange(len(data)) if data.kind != "multi" else pc.list_parent_indices(data.labels).to_numpy()
    unseen_rows = sorted(set(rows[unknown].tolist()))
    raise InputDataError(
        f"label(s) {unseen} do not occur in the training data {train_path}",
        path=data.path, column=column, rows=unseen_rows,
    )
