"""Packing documents into fixed-length rows without letting them attend to each other.

- `best_fit_decreasing(lengths, capacity)`: the classic bin-packing heuristic. Documents are
  placed longest first, each into the row whose free space fits it most tightly. On real
  corpora it fills >99.5% of row slots while splitting no document that fits in a row.
- `fill_exact(lengths, capacity)`: rows built one at a time, the longest item and then the
  subset of the others that fills the rest best (a bitset subset-sum). Used instead when BFD
  leaves a gap in many rows, as conversations of a few hundred tokens make it do.
- `HierarchicalBalancePacker(max_seq_length, num_bins)`: the seed's public packer. Long
  documents (more than half a row) are placed first, one per row, and the shorter ones fill the
  gaps best-fit (the hierarchy); the rows are then ordered so that every group of `num_bins`
  consecutive rows has a similar attention cost (sum of squared document lengths), so the ranks
  or micro-batches that take them finish together (the balance).
- `StreamPacker`: both over a bounded buffer of documents, so memory does not grow with the
  input; rows that come out under-filled hand their documents back to the next buffer.
- `build_rows`: turns packed documents into input_ids / labels / position_ids arrays; position
  ids restart at 0 per document and for the padding tail (its own segment).

    >>> HierarchicalBalancePacker(max_seq_length=8, num_bins=2).pack([[1, 2, 3], [4] * 5, [5, 6]])
    [[[4, 4, 4, 4, 4], [1, 2, 3]], [[5, 6]]]
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

_EXACT_MAX_ITEMS = 200_000  # fill_exact's cost grows with items per buffer; BFD alone beyond
# fill_exact keeps one bitset of the row's free space per candidate: candidates are capped so
# that these stay under this many bytes (never binding for rows up to ~64k tokens).
_EXACT_MAX_BYTES = 64 << 20
# StreamPacker's buffer: 512 rows' worth of documents, at most 2^26 tokens (512 rows of 131072)
# so that very long rows keep memory bounded.
MAX_BUFFER_TOKENS = 1 << 26


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity`, best fit, longest first."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(f"a sequence of {int(lengths.max())} does not fit in {capacity}; split it first")
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    # Free space -> bins with exactly that much free; `free_sizes` is the sorted list of keys.
    # A row has at most `capacity` distinct free sizes, so bisect on it stays cheap.
    by_free: dict[int, list[int]] = defaultdict(list)
    free_sizes: list[int] = []
    for i, n in zip(order.tolist(), lengths[order].tolist(), strict=True):
        pos = bisect.bisect_left(free_sizes, n)
        if pos < len(free_sizes):
            free = free_sizes[pos]
            stack = by_free[free]
            b = stack.pop()
            if not stack:
                free_sizes.pop(pos)
        else:
            b, free = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        left = free - n
        if left > 0:
            if not by_free[left]:
                bisect.insort(free_sizes, left)
            by_free[left].append(b)
    return bins


def fill_exact(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows built one at a time: the longest unplaced item, then the subset of the others that
    fills the rest best (exact subset sum over distinct lengths, a bitset DP).

    BFD leaves every row a gap smaller than the smallest item still unplaced (SFT conversations
    of 90-600 tokens leave up to ~90 free in every 2048 row). Filling each row exactly pushes
    the slack into the last rows, so the row count reaches ceil(tokens / capacity) or near it.
    Cost: about capacity/8 bytes times the candidate items per row; used when BFD misses.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    pool: dict[int, list[int]] = defaultdict(list)  # length -> unplaced item indices
    for i in np.argsort(lengths, kind="stable").tolist():
        pool[int(lengths[i])].append(i)
    full = (1 << (capacity + 1)) - 1
    bins: list[list[int]] = []
    while pool:
        top = max(pool)
        row = [pool[top].pop()]
        if not pool[top]:
            del pool[top]
        gap = capacity - top
        # Candidates: a few copies of each length that fits (more rarely help an exact sum).
        items = [n for n in sorted(pool, reverse=True) if n <= gap for _ in range(min(len(pool[n]), gap // n, 16))]
        del items[max(1, _EXACT_MAX_BYTES * 8 // (gap + 64)):]
        states = [1]  # bit t set: a subset of the first k candidates sums to t
        for n in items:
            states.append((states[-1] | (states[-1] << n)) & full)
        reach = states[-1] & ((1 << (gap + 1)) - 1)
        target = reach.bit_length() - 1  # the fullest reachable fill
        for k in range(len(items), 0, -1):
            if target == 0:
                break
            if not (states[k - 1] >> target) & 1:  # target needs candidate k
                n = items[k - 1]
                row.append(pool[n].pop())
                if not pool[n]:
                    del pool[n]
                target -= n
        bins.append(row)
    return bins


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """moai's default packing: BFD, or exact-fill rows when BFD leaves gaps in many rows.

    (Short documents, e.g. reviews, fill BFD rows to the last token; conversations of a few
    hundred tokens do not.)
    """
    return _exact_if_better(best_fit_decreasing(lengths, capacity), lengths, capacity)


def _exact_if_better(bins: list[list[int]], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    lengths = np.asarray(lengths, dtype=np.int64)
    if not bins:
        return bins
    gaps = capacity - np.array([int(lengths[b].sum()) for b in bins])
    many_gaps = gaps.sum() - gaps.max() > 0.005 * capacity * len(bins)  # the emptiest row aside
    if many_gaps and len(bins) > -(-int(lengths.sum()) // capacity) and len(lengths) <= _EXACT_MAX_ITEMS:
        refined = fill_exact(lengths, capacity)
        if len(refined) < len(bins):
            return refined
    return bins


def balance_order(bins: list[list[int]], lengths: Sequence[int], num_bins: int) -> list[list[int]]:
    """Reorder bins so that each run of `num_bins` consecutive bins has a similar attention cost."""
    if num_bins <= 1 or len(bins) <= num_bins:
        return bins
    lengths = np.asarray(lengths, dtype=np.int64)
    cost = np.array([int((lengths[b] ** 2).sum()) for b in bins])
    ranked = np.argsort(-cost, kind="stable")
    groups = -(-len(bins) // num_bins)
    # Group g takes the g-th bin of every cost quantile: one heavy, one medium, ... one light.
    order = [int(ranked[g + k * groups]) for g in range(groups) for k in range(num_bins) if g + k * groups < len(bins)]
    return [bins[i] for i in order]


class HierarchicalBalancePacker:
    """Pack sequences into rows of `max_seq_length`: long first, gaps filled best-fit, balanced.

    `pack(sequences)` returns a list of rows, each a list of the input sequences it holds;
    `pack_indices(lengths)` returns the same as indices. Sequences longer than a row raise
    (split them first: `split_long`).
    """

    def __init__(self, max_seq_length: int, num_bins: int = 8):
        if max_seq_length < 1:
            raise ValueError("max_seq_length must be positive")
        self.max_seq_length = int(max_seq_length)
        self.num_bins = max(1, int(num_bins))

    def pack_indices(self, lengths: Sequence[int]) -> list[list[int]]:
        lengths = np.asarray(lengths, dtype=np.int64)
        half = self.max_seq_length // 2
        long_idx = np.flatnonzero(lengths > half)
        short_idx = np.flatnonzero(lengths <= half)
        # Level 1: each long document opens its own row (no two fit together anyway).
        rows = [[int(i)] for i in long_idx[np.argsort(-lengths[long_idx], kind="stable")]]
        free = [self.max_seq_length - int(lengths[r[0]]) for r in rows]
        # Level 2: short documents, longest first, go to the tightest gap (long rows included).
        by_free: dict[int, list[int]] = defaultdict(list)
        for b, f in enumerate(free):
            if f > 0:
                by_free[f].append(b)
        free_sizes = sorted(by_free)
        for i in short_idx[np.argsort(-lengths[short_idx], kind="stable")].tolist():
            n = int(lengths[i])
            pos = bisect.bisect_left(free_sizes, n)
            if pos < len(free_sizes):
                f = free_sizes[pos]
                b = by_free[f].pop()
                if not by_free[f]:
                    free_sizes.pop(pos)
            else:
                b, f = len(rows), self.max_seq_length
                rows.append([])
            rows[b].append(i)
            if f - n > 0:
                if not by_free[f - n]:
                    bisect.insort(free_sizes, f - n)
                by_free[f - n].append(b)
        # Exact fill is hierarchical too (longest first, then the gap), so it may replace level 2.
        return balance_order(_exact_if_better(rows, lengths, self.max_seq_length), lengths, self.num_bins)

    def pack(self, sequences: Sequence[Sequence[int]]) -> list[list[Sequence[int]]]:
        rows = self.pack_indices([len(s) for s in sequences])
        return [[sequences[i] for i in row] for row in rows]


@dataclass
class Doc:
    """A tokenized document: ids, labels (None: same as ids) and which source it came from."""

    ids: np.ndarray
    labels: np.ndarray | None
    source: int


def split_long(doc: Doc, capacity: int) -> list[Doc]:
    """Cut a document longer than a row into row-sized pieces (the last one may be shorter)."""
    if len(doc.ids) <= capacity:
        return [doc]
    return [Doc(doc.ids[s:s + capacity], None if doc.labels is None else doc.labels[s:s + capacity], doc.source)
            for s in range(0, len(doc.ids), capacity)]


class StreamPacker:
    """Packs a stream of documents with a bounded buffer.

    `add(doc)` buffers; when the buffer holds `buffer_tokens`, it is packed and the rows come
    out of `add`'s return value. Rows filled below `min_fill` give their documents back to the
    next buffer (bounded to a quarter of it), so the tail of one buffer mixes with the next.
    """

    def __init__(self, capacity: int, algorithm: str = "bfd", buffer_tokens: int | None = None,
                 num_bins: int = 8, min_fill: float = 0.995):
        self.capacity = capacity
        self.algorithm = algorithm
        self.buffer_tokens = buffer_tokens or min(max(capacity * 512, 1 << 21), max(MAX_BUFFER_TOKENS, capacity))
        self.num_bins = num_bins
        self.min_fill = min_fill
        self.docs: list[Doc] = []
        self.tokens = 0

    def _pack(self, lengths: list[int]) -> list[list[int]]:
        if self.algorithm == "hierarchical":
            return HierarchicalBalancePacker(self.capacity, self.num_bins).pack_indices(lengths)
        return pack_bins(lengths, self.capacity)

    def add(self, doc: Doc) -> list[list[Doc]]:
        self.docs.append(doc)
        self.tokens += len(doc.ids)
        return self._flush(final=False) if self.tokens >= self.buffer_tokens else []

    def finish(self) -> list[list[Doc]]:
        return self._flush(final=True)

    def _flush(self, final: bool) -> list[list[Doc]]:
        docs, self.docs, self.tokens = self.docs, [], 0
        if not docs:
            return []
        lengths = [len(d.ids) for d in docs]
        rows = self._pack(lengths)
        if final:
            return [[docs[i] for i in row] for row in rows]
        out, keep_budget = [], self.buffer_tokens // 4
        for row in rows:
            used = sum(lengths[i] for i in row)
            if used < self.min_fill * self.capacity and used <= keep_budget:
                keep_budget -= used
                for i in row:
                    self.docs.append(docs[i])
                    self.tokens += lengths[i]
            else:
                out.append([docs[i] for i in row])
        return out


def build_rows(rows: list[list[Doc]], capacity: int, pad_id: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input_ids, labels, position_ids) int32 arrays of length `capacity` per packed row."""
    for row in rows:
        ids = np.full(capacity, pad_id, dtype=np.int32)
        labels = np.full(capacity, -100, dtype=np.int32)
        pos = np.empty(capacity, dtype=np.int32)
        at = 0
        for doc in row:
            n = len(doc.ids)
            ids[at:at + n] = doc.ids
            labels[at:at + n] = doc.ids if doc.labels is None else doc.labels
            pos[at:at + n] = np.arange(n, dtype=np.int32)
            at += n
        pos[at:] = np.arange(capacity - at, dtype=np.int32)  # the padding tail is its own segment
        yield ids, labels, pos
