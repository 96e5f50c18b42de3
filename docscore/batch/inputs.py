"""INPUT arguments → shards (input file + output path relative to OUT), and an input file as the scorer sees it.

Discovery follows ``pyarrow.dataset``, Spark and Hive: below a directory or glob root, a path with a component
starting with ``_`` or ``.`` is skipped (``_temporary/``, ``.spark-staging/``, ``_SUCCESS``, ``.hidden.parquet``),
and ``key=value`` folders are hive partitions whose keys read as string columns (a file outside every folder of a
key, e.g. at the lake's root, reads it as null, as in ``pyarrow.dataset``). A nested struct field is a column under
its dotted path (``meta.body``).

Local directories and globs are walked, not globbed: symlinked folders are followed, but each real folder (its
``(st_dev, st_ino)``) is entered once and each real file taken once, at its first path in sorted order, so a
symlink loop can neither repeat files nor hang discovery. A walk visits at most ``MAX_DISCOVERY_ENTRIES`` entries
(folders and files, below each input) and logs its progress every ``PROGRESS_EVERY`` entries."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from docscore.errors import ConfigError, InputDataError
from docscore.storage import Location, explain, has_scheme, resolve

log = logging.getLogger(__name__)

MAX_DISCOVERY_ENTRIES = 2_000_000  # entries one local walk may visit; a symlink to a huge tree fails, never hangs
PROGRESS_EVERY = 100_000  # a walk logs its progress every this many entries


@dataclass(frozen=True)
class Shard:
    """One input file and where its output goes (``rel``, relative to the output directory).

    ``path`` is a local path, or, for a file on an object store, its path on ``fs`` (``uri`` is then the URI
    shown in messages and recorded in the manifest).
    """

    path: Path | str
    rel: str
    fs: pafs.FileSystem | None = field(default=None, compare=False, repr=False)
    uri: str | None = None
    lake_keys: tuple[str, ...] = field(default=(), compare=False, repr=False)  # hive keys of the whole run

    @property
    def partitions(self) -> tuple[tuple[str, str | None], ...]:
        """The hive ``key=value`` folders of ``rel``, outermost first, then ``(key, None)`` for each hive key other
        files of the run have and this one lacks (a file at the lake's root reads ``date`` as null)."""
        return hive_partitions(self.rel, self.lake_keys)

    @property
    def name(self) -> str:
        """The input as messages show it: the path given, or the URI."""
        return self.uri or str(self.path)

    @property
    def source(self) -> str:
        """The input as the manifest records it: an absolute local path, or the URI."""
        return self.uri or str(Path(self.path).resolve())


def hive_partitions(rel: str, lake_keys: Sequence[str] = ()) -> tuple[tuple[str, str | None], ...]:
    """The hive ``(key, value)`` folders of ``rel``, then ``(key, None)`` for each of ``lake_keys`` it lacks."""
    pairs = _hive_folders(rel)
    keys = {k for k, _ in pairs}
    return pairs + tuple((k, None) for k in lake_keys if k not in keys)


def _hive_folders(rel: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in rel.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep and key:
            pairs.append((unquote(key), unquote(value)))
    return tuple(pairs)


def is_hidden(rel: str) -> bool:
    """True for paths readers skip: any component starting with ``_`` or ``.``."""
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def discover(inputs: list[str | os.PathLike], exclude: Location | Path | None = None,
             endpoint: str | None = None, max_entries: int = MAX_DISCOVERY_ENTRIES) -> list[Shard]:
    """Expand files, directories (every ``*.parquet`` below, recursively) and globs, local or URIs, in a stable
    order.

    Output paths mirror the layout under each directory or glob root; a plain file keeps its name. Two inputs
    mapping to the same output path are refused. Every shard learns the hive keys of the whole run
    (:attr:`Shard.lake_keys`), so a file lacking one reads it as null.

    Args:
        endpoint: the S3-compatible endpoint for ``s3://`` inputs that name none.
        max_entries: the most entries (folders and files) one local directory or glob walk may visit; more
            raises :class:`InputDataError` (a symlink to a huge tree, a mount that never ends).
    """
    if isinstance(exclude, Location):
        exclude_loc, exclude = exclude, (Path(exclude.path) if exclude.is_local else None)
    else:
        exclude_loc = None
    shards: dict[str, Shard] = {}
    for item in inputs:
        item = str(item)
        if has_scheme(item):
            loc = resolve(item, endpoint)
            if not loc.is_local:
                for shard in _discover_remote(loc, item):
                    if exclude_loc is not None and not exclude_loc.is_local and (
                            shard.path + "/").startswith(exclude_loc.path.rstrip("/") + "/"):
                        continue
                    _add(shards, shard)
                continue
            item = loc.path
        if glob.has_magic(item):
            root = Path(_glob_root(item))
            matcher = _GlobMatcher(Path(item).parts[len(root.parts):])
            pairs = [(root / r, r) for r in _walk(root, matcher, item, max_entries)]
            if not pairs:
                raise InputDataError(f"no files match {item!r} (paths with a component starting with _ or . "
                                     "are skipped)", path=item)
        elif Path(item).is_dir():
            root = Path(item)
            pairs = [(root / r, r) for r in _walk(root, _SuffixMatcher(".parquet"), item, max_entries)]
            if not pairs:
                raise InputDataError(f"directory {item} holds no *.parquet files (paths with a component starting "
                                     "with _ or . are skipped)", path=item)
        elif Path(item).is_file():
            pairs = [(Path(item), Path(item).name)]
        else:
            raise InputDataError(f"input {item} does not exist", path=item)
        for path, rel in pairs:
            if exclude is not None and _inside(path, exclude):
                continue
            _add(shards, Shard(path, rel))
    keys = tuple(dict.fromkeys(k for s in shards.values() for k, _ in _hive_folders(s.rel)))
    return [replace(s, lake_keys=keys) for s in shards.values()]


def _add(shards: dict[str, Shard], shard: Shard) -> None:
    rel = shard.rel if shard.rel.endswith(".parquet") else shard.rel + ".parquet"
    shard = replace(shard, rel=rel)
    if rel in shards and shards[rel].source != shard.source:
        raise ConfigError(f"inputs {shards[rel].name} and {shard.name} would both write {rel}; "
                          "score them into different output directories")
    shards[rel] = shard


def _discover_remote(loc: Location, item: str) -> list[Shard]:
    """The files of a directory, glob or file on an object store (the glob matched against the keys)."""
    try:
        if glob.has_magic(loc.path):
            root = _glob_root(loc.path)
            pattern = re.compile(_glob_regex(loc.path))
            infos = loc.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            found = sorted(i.path for i in infos if i.type == pafs.FileType.File and pattern.fullmatch(i.path))
            what = f"no files match {item!r}"
        else:
            info = loc.fs.get_file_info(loc.path)
            if info.type == pafs.FileType.File:
                return [Shard(loc.path, loc.path.rsplit("/", 1)[-1], loc.fs, loc.uri_of(loc.path))]
            if info.type == pafs.FileType.NotFound:
                raise InputDataError(f"input {loc.uri} does not exist", path=loc.uri)
            root = loc.path
            infos = loc.fs.get_file_info(pafs.FileSelector(root, recursive=True))
            found = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
            what = f"directory {loc.uri} holds no *.parquet files"
    except OSError as e:
        raise InputDataError(f"cannot read {loc.uri}: {explain(e)}", path=loc.uri) from e
    shards = [Shard(p, p[len(root.rstrip("/")) + 1:], loc.fs, loc.uri_of(p)) for p in found]
    shards = [s for s in shards if not is_hidden(s.rel)]
    if not shards:
        raise InputDataError(f"{what} (paths with a component starting with _ or . are skipped)", path=loc.uri)
    return shards


def _glob_regex(pattern: str) -> str:
    """A glob over object keys as a regex: ``**`` spans folders, ``*`` and ``?`` stay inside one."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            j = pattern.index("]", i + 1)
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class _SuffixMatcher:
    """A directory input: every file whose name ends with ``suffix``, at any depth."""

    def __init__(self, suffix: str):
        self.suffix = suffix

    def enter(self, parts: tuple[str, ...]) -> bool:
        return True

    def match(self, parts: tuple[str, ...]) -> bool:
        return parts[-1].endswith(self.suffix)


class _GlobMatcher:
    """The part of a glob below its root, matched one path component at a time as :func:`glob.glob` does
    (``recursive=True``): ``**`` as a whole component spans any number of folders, ``*`` and ``?`` stay inside
    one component."""

    def __init__(self, parts: tuple[str, ...]):
        self.parts = parts
        self.regex = [None if p == "**" else re.compile(_glob_regex(p.replace("**", "*"))) for p in parts]

    def _fits(self, parts: tuple[str, ...], i: int, j: int, whole: bool) -> bool:
        while j < len(self.parts):
            if self.regex[j] is None:  # "**": zero or more folders (or, last, files at any depth)
                if j == len(self.parts) - 1:
                    return i < len(parts) or not whole
                return any(self._fits(parts, k, j + 1, whole) for k in range(i, len(parts) + 1))
            if i == len(parts):
                return not whole  # a folder above the pattern's depth may still lead to a match
            if not self.regex[j].fullmatch(parts[i]):
                return False
            i, j = i + 1, j + 1
        return whole and i == len(parts)

    def enter(self, parts: tuple[str, ...]) -> bool:
        return self._fits(parts, 0, 0, whole=False)

    def match(self, parts: tuple[str, ...]) -> bool:
        return self._fits(parts, 0, 0, whole=True)


def _walk(root: Path, matcher, item: str, max_entries: int) -> list[str]:
    """Relative paths of the files below ``root`` that ``matcher`` takes, in sorted order (component by component,
    as :class:`~pathlib.Path` sorts).

    Symlinked folders are followed, but a folder whose ``(st_dev, st_ino)`` was entered before is not entered
    again, and a file whose identity was taken before (through another path, a symlink or a hard link) is not
    taken again: the walk is depth-first in sorted order, so the first path in sorted order wins. Hidden
    components (``_*``, ``.*``) are not entered.
    """
    try:
        st = root.stat()
    except OSError:
        return []
    seen_dirs = {(st.st_dev, st.st_ino)}
    seen_files: set[tuple[int, int]] = set()
    found: list[str] = []
    visited = 0
    stack = [(iter(_listdir(str(root), item)), ())]
    while stack:
        entries, parts = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        visited += 1
        if visited > max_entries:
            raise InputDataError(f"discovery of {item} visited more than {max_entries:,} entries (a symlink to a "
                                 "huge tree?); name a narrower directory or glob", path=item)
        if visited % PROGRESS_EVERY == 0:
            log.info("discovery of %s: %s entries visited, %s files found so far", item, f"{visited:,}",
                     f"{len(found):,}")
        if entry.name.startswith(("_", ".")):
            continue
        sub = (*parts, entry.name)
        try:
            if entry.is_dir():
                if matcher.enter(sub):
                    est = entry.stat()
                    if (est.st_dev, est.st_ino) not in seen_dirs:
                        seen_dirs.add((est.st_dev, est.st_ino))
                        stack.append((iter(_listdir(entry.path, item)), sub))
            elif entry.is_file() and matcher.match(sub):
                fst = entry.stat()
                if (fst.st_dev, fst.st_ino) not in seen_files:
                    seen_files.add((fst.st_dev, fst.st_ino))
                    found.append("/".join(sub))
        except OSError:  # vanished since it was listed, or a symlink to nowhere
            continue
    return found


def _listdir(path: str, item: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        log.warning("discovery of %s: cannot list %s (%s); files below it are skipped", item, path, e.strerror or e)
        return []


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    root = []
    for part in parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return str(Path(*root)) if root else "."


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


class InputFile:
    """One input Parquet file as the scorer sees it: the file's top-level columns, its hive partition keys (string
    columns; a file column of the same name wins) and, when asked for, nested struct fields under dotted names.

    Args:
        source: a path or a file-like object (e.g. :class:`~docscore.batch.commit.fingerprint.DigestingFile`).
        partitions: the shard's hive ``(key, value)`` pairs.
        wanted: the columns the run needs; dotted names are looked up as struct paths.
        path: the file's path, for messages.
    """

    def __init__(self, source, partitions: Sequence[tuple[str, str]] = (), wanted: Sequence[str] = (), path=None):
        self.pf = pq.ParquetFile(source)
        self.path = path if path is not None else source
        self.metadata = self.pf.metadata
        base = self.pf.schema_arrow
        self._partitions = {k: v for k, v in partitions if k not in base.names}
        self._nested: dict[str, pa.Field] = {}
        for name in wanted:
            if name not in base.names and name not in self._partitions and "." in name:
                leaf = _struct_field(base, name.split("."))
                if leaf is not None:
                    self._nested[name] = leaf.with_name(name)
        self.schema = pa.schema([*base, *self._nested.values(),
                                 *(pa.field(k, pa.string()) for k in self._partitions)])

    @property
    def num_rows(self) -> int:
        return self.metadata.num_rows

    def iter_batches(self, columns: Sequence[str], batch_size: int,
                     row_groups: Sequence[int]) -> Iterator[pa.RecordBatch]:
        """Record batches holding exactly ``columns`` (logical names), in that order."""
        file_cols = [c for c in columns if c not in self._partitions]
        fields = [self.schema.field(c) for c in columns]
        for batch in self.pf.iter_batches(batch_size=batch_size, row_groups=list(row_groups), columns=file_cols):
            arrays = []
            for c, f in zip(columns, fields):
                if c in self._partitions:
                    arrays.append(pa.array([self._partitions[c]] * batch.num_rows, pa.string()))
                elif c in self._nested:
                    arrays.append(_leaf(batch, c.split(".")))
                else:
                    arrays.append(batch.column(c))
            yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _struct_field(schema, path: list[str]) -> pa.Field | None:
    fields = schema
    field = None
    for name in path:
        idx = fields.get_field_index(name) if hasattr(fields, "get_field_index") else -1
        if idx < 0:
            return None
        field = fields.field(idx)
        fields = field.type if pa.types.is_struct(field.type) else None
        if fields is None and name != path[-1]:
            return None
    return field


def _leaf(batch: pa.RecordBatch, path: list[str]) -> pa.Array:
    """A struct path's values; a null struct gives a null value."""
    import pyarrow.compute as pc

    array = batch.column(path[0])
    for name in path[1:]:
        array = pc.struct_field(array, name)
    return array


class RowStream:
    """Record batches of one file from row ``start`` on, handed out in exact row counts (``take``): the rows of a
    checkpoint part, or of a Ray block, whatever the file's row groups and batches."""

    def __init__(self, pf: InputFile, start: int, columns: list[str], batch_rows: int, path):
        md = pf.metadata
        first, before = 0, 0
        while first < md.num_row_groups and before + md.row_group(first).num_rows <= start:
            before += md.row_group(first).num_rows
            first += 1
        groups = list(range(first, md.num_row_groups))
        self._it = pf.iter_batches(columns, batch_rows, groups) if groups else iter(())
        self._skip = start - before
        self._pending = None
        self._path = path

    def _next(self) -> pa.RecordBatch:
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        while True:
            try:
                batch = next(self._it)
            except StopIteration:
                raise InputDataError("the file holds fewer rows than its footer says", path=self._path) from None
            if self._skip:
                if batch.num_rows <= self._skip:
                    self._skip -= batch.num_rows
                    continue
                batch, self._skip = batch.slice(self._skip), 0
            if batch.num_rows:
                return batch

    def take(self, n: int):
        while n > 0:
            batch = self._next()
            if batch.num_rows > n:
                batch, self._pending = batch.slice(0, n), batch.slice(n)
            n -= batch.num_rows
            yield batch
