"""Read a SetFit ``model_head.pkl`` without running code from it.

SetFit saves its head with ``joblib.dump``: a pickle, in which any class may appear and any callable may run while
it is loaded. docscore never loads such a file with a plain unpickler (nor a torch file with
``weights_only=False``). This reader is the ``weights_only`` idea for scikit-learn heads: an allowlist of the few
globals a fitted ``LogisticRegression`` (or a one-vs-rest wrapper of them) pickles to, and nothing else.

- scikit-learn estimators are *never constructed*: each becomes a :class:`Recorded` holding its pickled state
  (``coef_``, ``intercept_``, ``classes_``, ...), so no scikit-learn code runs and scikit-learn need not be
  installed;
- numpy arrays come back through numpy's own reconstructors, or — for joblib's in-file array format — are read
  here as raw bytes of the recorded dtype and shape;
- any other global (``os.system``, a torch module, ``setfit.SetFitHead``, ...) is refused by name before it is
  looked up.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from docscore.errors import CheckpointError

ESTIMATORS = {
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("sklearn.linear_model.logistic", "LogisticRegression"),  # scikit-learn < 0.22
    ("sklearn.multiclass", "OneVsRestClassifier"),
    ("sklearn.preprocessing._label", "LabelBinarizer"),
    ("sklearn.preprocessing.label", "LabelBinarizer"),  # scikit-learn < 0.22
}
NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}
JOBLIB_ARRAY = ("joblib.numpy_pickle", "NumpyArrayWrapper")
MAX_BYTES = 1 << 30  # a logistic-regression head is kilobytes; refuse anything absurd before reading it


class Recorded:
    """A pickled scikit-learn object as data: ``kind`` (``module.Class``) and ``state`` (its ``__dict__``)."""

    kind = ""

    def __setstate__(self, state) -> None:
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"Recorded({self.kind})"


class _ArrayHeader:
    """joblib's ``NumpyArrayWrapper``: dtype, shape and order of the raw array bytes that follow it."""


def _recorded_class(module: str, name: str) -> type:
    return type(name, (Recorded,), {"kind": f"{module}.{name}"})


class _AllowlistUnpickler(pickle._Unpickler):  # the Python unpickler: its BUILD step can be extended
    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file, path: Path):
        super().__init__(file)
        self._file = file
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in ESTIMATORS:
            return _recorded_class(module, name)
        if (module, name) in NUMPY:
            return super().find_class(module, name)
        if (module, name) == JOBLIB_ARRAY:
            return _ArrayHeader
        raise CheckpointError(
            f"{self._path} pickles {module}.{name}, which docscore does not unpickle (it reads only scikit-learn's "
            "LogisticRegression / OneVsRestClassifier heads and numpy arrays, and never runs code from a pickle)")

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)
        if isinstance(self.stack[-1], _ArrayHeader):  # joblib writes the array's bytes right after its header
            self.stack[-1] = self._read_array(self.stack[-1])

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, header: _ArrayHeader) -> np.ndarray:
        dtype = header.__dict__.get("dtype")
        shape = tuple(int(x) for x in header.__dict__.get("shape", ()))
        if not isinstance(dtype, np.dtype) or header.__dict__.get("subclass", np.ndarray) is not np.ndarray:
            raise CheckpointError(f"{self._path}: a joblib array of an unexpected type; re-save the head with "
                                  "joblib.dump")
        if dtype.hasobject:  # joblib pickles object arrays as a nested stream: read it under the same allowlist
            array = _AllowlistUnpickler(self._file, self._path).load()
            if not isinstance(array, np.ndarray):
                raise CheckpointError(f"{self._path}: a joblib object array is not an array")
            return array
        if header.__dict__.get("numpy_array_alignment_bytes") is not None:
            padding = self._file.read(1)
            self._file.read(padding[0] if padding else 0)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = count * dtype.itemsize
        if size > MAX_BYTES:
            raise CheckpointError(f"{self._path}: an array of {size} bytes; not a classification head")
        data = self._file.read(size)
        if len(data) != size:
            raise CheckpointError(f"{self._path} is truncated (an array's data ends early)")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if header.__dict__.get("order") == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def load_allowlisted(path: str | Path):
    """The object pickled in ``path`` (plain pickle or uncompressed ``joblib.dump``), estimators as
    :class:`Recorded`.

    Raises:
        CheckpointError: the file names a global outside the allowlist, is compressed, truncated or not a pickle.
    """
    path = Path(path)
    data = path.read_bytes() if path.stat().st_size <= MAX_BYTES else b""
    if not data.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not an uncompressed pickle (joblib compression is not read); re-save the "
                              "head with joblib.dump(head, path) and no compress argument")
    try:
        return _AllowlistUnpickler(io.BytesIO(data), path).load()
    except CheckpointError:
        raise
    except Exception as e:  # a malformed stream: the unpickler's many error types say only that
        raise CheckpointError(f"{path} could not be read as a pickle: {type(e).__name__}: {e}") from e
