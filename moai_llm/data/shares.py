"""Shares: which part of the sources each task of a prepare reads.

The input is laid end to end (sources in order, each file's bytes times the source's passes,
so a weight of 2 costs twice) and cut into `tasks` equal ranges of that cost. A `.jsonl` or
`.txt` file is cut at those byte offsets: a line belongs to the share where its first byte
falls, so every line is read by exactly one task. Other files (`.json`, `.csv`, `.parquet`,
`.arrow`) and a hub dataset are read whole by the share holding their middle. The plan
depends only on the file sizes and the task count, so every node computes the same one.

A task reading from the middle of a file counts the newlines before its first line (at
memory speed, a small fraction of the time spent tokenizing that share) so a bad row is still
reported as `file.jsonl:LINE`.

    >>> import tempfile, pathlib
    >>> from moai_llm.data.sources import BadRows, resolve_sources
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text("".join(f'{{"text": "doc {i}"}}\\n' for i in range(10)))
    >>> srcs = resolve_sources([str(d / "a.jsonl")])
    >>> plan = plan_shares(srcs, 3)
    >>> [[(p.start, p.end) for p in share] for share in plan]   # 18-byte lines: line 4 starts at 54
    [[(0, 60)], [(60, 120)], [(120, 180)]]
    >>> [where.rsplit("/", 1)[-1] for _, where in read_piece(srcs[0], plan[1][0], BadRows(False))]
    ['a.jsonl:5', 'a.jsonl:6', 'a.jsonl:7']
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from moai_llm.data import sources as src_mod

SPLITTABLE = (".jsonl", ".txt")  # one record per line: cut anywhere, resynchronised at the next line
TASK_BYTES = 128 << 20  # input cost per task when the count is not given (about 10 minutes per core)


@dataclass
class Piece:
    """Part of one source: bytes [start, end) of file `file` (None: the hub dataset)."""

    source: int
    file: int | None
    start: int
    end: int
    cost: int  # bytes read, all passes together (what progress counts)
    first: bool  # holds the source's first record (which decides its schema)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Piece:
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passes(source: src_mod.Source) -> int:
    return max(1, math.ceil(source.weight))


def input_cost(srcs: list[src_mod.Source]) -> int:
    """Bytes to read, each source's files times its passes (hub datasets count 0: size unknown)."""
    return sum(p.stat().st_size * passes(s) for s in srcs if not s.is_hub for p in s.files)


def auto_tasks(srcs: list[src_mod.Source], workers: int) -> int:
    """The task count when none is given: one per TASK_BYTES of input, at least one per worker."""
    return max(1, workers, math.ceil(input_cost(srcs) / TASK_BYTES))


def plan_shares(srcs: list[src_mod.Source], tasks: int) -> list[list[Piece]]:
    """`tasks` lists of pieces covering every record of `srcs` once, of near-equal cost."""
    shares: list[list[Piece]] = [[] for _ in range(tasks)]
    total = input_cost(srcs)
    width = total / tasks if total else 1.0

    def share_at(offset: float) -> int:
        return min(tasks - 1, int(offset // width)) if total else 0

    at = 0
    for i, source in enumerate(srcs):
        if source.is_hub:
            shares[share_at(at)].append(Piece(i, None, 0, 0, 0, True))
            continue
        reps = passes(source)
        for j, path in enumerate(source.files):
            size = path.stat().st_size
            cost = size * reps
            if path.suffix.lower() not in SPLITTABLE:
                shares[share_at(at + cost / 2)].append(Piece(i, j, 0, size, cost, j == 0))
                at += cost
                continue
            start = 0
            while start < size:
                k = share_at(at + start * reps)
                end = size if k == tasks - 1 else min(size, math.ceil(((k + 1) * width - at) / reps))
                end = max(end, start + 1)
                shares[k].append(Piece(i, j, start, end, (end - start) * reps, j == 0 and start == 0))
                start = end
            at += cost
    return shares


def read_piece(source: src_mod.Source, piece: Piece, bad: src_mod.BadRows,
               progress: Any = None) -> Iterator[tuple[dict[str, Any], str]]:
    """(record, location) of every record in `piece`; `progress.bytes` grows as bytes are read."""
    if piece.file is None:
        yield from src_mod.iter_records(source, bad)
        return
    path = source.files[piece.file]
    if path.suffix.lower() in SPLITTABLE:
        yield from src_mod.iter_file(path, bad, (piece.start, piece.end), progress)
        return
    yield from src_mod.iter_file(path, bad)
    if progress is not None:
        progress.bytes += piece.end - piece.start
