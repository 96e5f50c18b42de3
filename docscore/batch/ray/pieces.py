"""Pieces: the rows ``[start, stop)`` of one input file that make one actor call, how a shard is cut into them,
and how an actor reads one (continuing its open row stream, so reads stay linear in a file's rows)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from docscore.batch.commit.committer import ShardPlan
from docscore.batch.inputs import InputFile, RowStream, hive_partitions
from docscore.batch.scorefiles import Keys
from docscore.batch.scorer import WindowStats
from docscore.storage import resolve


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one input file: one actor call. It never spans two row groups or two checkpoint
    parts, so a part ends exactly at the end of a piece.

    ``uri`` is what the actor opens (a URI, or an absolute path on a file system every node mounts) and
    ``endpoint`` the S3-compatible endpoint, if any; credentials never travel with a piece (each node uses its
    store's standard chain).
    """

    shard: int  # the shard's index in this run
    uri: str
    rel: str  # the output path: its hive folders are columns
    start: int
    stop: int
    endpoint: str | None = None
    lake_keys: tuple[str, ...] = ()  # the run's hive keys: a file outside their folders reads them as null


@dataclass
class PieceResult:
    """What an actor returns for a piece: the scored rows and their counters, or why the piece could not be read."""

    table: pa.Table | None
    stats: WindowStats
    error: str | None = None
    keys: Keys | None = None  # the rows' text digests (for the shard's score file)


def plan_pieces(index: int, plan: ShardPlan, row_groups: list[int], piece_rows: int, uri: str,
                endpoint: str | None) -> list[Piece]:
    """Cut a shard's rows from its resume point into pieces of at most ``piece_rows`` rows, split at row-group and
    checkpoint-part boundaries.

    Args:
        row_groups: rows per row group of the file.
    """
    cuts = {plan.rows}
    first = 0
    for n in row_groups:
        cuts.add(first)
        first += n
    cuts.update(range(0, plan.rows, plan.checkpoint_rows))
    pieces, bounds = [], sorted(c for c in cuts if c >= plan.start_row)
    for lo, hi in zip(bounds, bounds[1:]):
        for a in range(lo, hi, piece_rows):
            pieces.append(Piece(index, uri, plan.shard.rel, a, min(a + piece_rows, hi), endpoint,
                                plan.shard.lake_keys))
    return pieces



def read_piece(piece: Piece, columns: list[str], read_batch_rows: int, cache: dict | None = None) -> pa.Table:
    """The input rows of a piece (the columns the scorer needs, hive keys included), read by whoever calls it.

    Args:
        cache: a dict kept by the caller: the last file opened stays open, and so does its row stream, so the next
            piece of the same row group further on continues from where this one ended (skipping what other actors
            read) instead of decoding the row group again from its start. An actor's reads of a file are therefore
            linear in the file's rows, however many pieces a large row group is cut into.
    """
    cache = cache if cache is not None else {}
    if cache.get("uri") != piece.uri:
        cache.clear()
        loc = resolve(piece.uri, piece.endpoint)
        cache.update(uri=piece.uri, src=InputFile(loc.fs.open_input_file(loc.path),
                                                  hive_partitions(piece.rel, piece.lake_keys), columns,
                                                  path=piece.uri))
    src = cache["src"]
    stream, pos = cache.get("stream"), cache.get("pos", -1)
    if stream is None or not pos <= piece.start or _row_group(src, pos) != _row_group(src, piece.start):
        stream, pos = RowStream(src, piece.start, columns, read_batch_rows, piece.uri), piece.start
    if piece.start > pos:
        for _ in stream.take(piece.start - pos):  # rows of this row group that other actors score
            pass
    cache.update(stream=None)  # a read that fails half-way leaves no stream at an unknown position
    batches = list(stream.take(piece.stop - piece.start))
    cache.update(stream=stream, pos=piece.stop)
    return pa.Table.from_batches(batches, schema=batches[0].schema) if batches else None


def _row_group(src: InputFile, row: int) -> int:
    """The index of the row group holding ``row`` (the number of row groups past the end)."""
    md, first = src.metadata, 0
    for i in range(md.num_row_groups):
        first += md.row_group(i).num_rows
        if row < first:
            return i
    return md.num_row_groups
