"""Deterministic data order over a prepared dataset, with the data position as one number.

Rows are visited in a permutation drawn from `seed + epoch`, epoch after epoch. Global sample
k of the run is row `perm(k // n)[k % n]`; optimizer step s uses samples
[s·G, (s+1)·G) where G is the global batch, split into micro-batches per process. So the
data position is just `samples_consumed`, resume is exact, and 1 process × 4 micro-batches
sees the same rows per step as 2 processes × 2.

    >>> order = BatchOrder(num_rows=1000, seed=42)
    >>> micro_batch_size = order.micro_batches(step=3, micro_batch_size=2, accumulation=2, rank=0, world=2)
    >>> [len(m) for m in micro_batch_size]            # the plan's micro_batch_size batch, accumulation and processes
    [2, 2]
"""

from __future__ import annotations

import numpy as np
import torch


class BatchOrder:
    """Which row indices each process trains on at each step."""

    def __init__(self, num_rows: int, seed: int, first_row: int = 0):
        if num_rows < 1:
            raise ValueError("the dataset has no rows")
        self.num_rows = num_rows
        self.seed = seed
        self.first_row = first_row  # rows before it are held out (evaluation)
        self._cached: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.num_rows, generator=g).numpy())
        return self._cached[1]

    def rows(self, start: int, count: int) -> np.ndarray:
        """Row indices of global samples [start, start + count)."""
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            k = start + i
            out[i] = self._perm(k // self.num_rows)[k % self.num_rows]
        return out + self.first_row

    def micro_batches(self, step: int, micro_batch_size: int, accumulation: int, rank: int,
                      world: int) -> list[np.ndarray]:
        """This process's `accumulation` micro-batches of `micro_batch_size` rows for optimizer step `step`
        (0-based); the step covers micro_batch_size x accumulation x world global samples."""
        global_batch = micro_batch_size * accumulation * world
        rows = self.rows(step * global_batch, global_batch)
        # Interleave so that micro-batch a of rank r holds rows [(a·world + r)·micro_batch_size, ...).
        return [rows[(a * world + rank) * micro_batch_size:(a * world + rank + 1) * micro_batch_size]
                for a in range(accumulation)]


class RowReader:
    """Reads rows of a prepared dataset as int64 tensors (input_ids, labels, position_ids).

    Small datasets are loaded into memory once (faster than Arrow lookups per batch); large
    ones are read per batch from the memory-mapped Arrow files."""

    COLUMNS = ("input_ids", "labels", "position_ids")
    PAIR_COLUMNS = ("pair_index", "pair_role")  # preference rows: a list per row, passed through as lists

    def __init__(self, dataset, in_memory_bytes: int = 1 << 30, vocab: int | None = None,
                 where: str = "the prepared dataset"):
        self.dataset = dataset.with_format("numpy", columns=list(self.COLUMNS))
        self.pairs = None  # pair_index / pair_role lists per row (preference data only)
        if all(c in dataset.column_names for c in self.PAIR_COLUMNS):
            self.pairs = {c: [[int(x) for x in v] for v in dataset[c]] for c in self.PAIR_COLUMNS}
        self.num_rows = len(dataset)
        self.vocab, self.where = vocab, where  # token ids must be below `vocab` (None: unchecked)
        self.cache: dict[str, torch.Tensor] | None = None
        seq = len(self.dataset[0]["input_ids"]) if self.num_rows else 0
        if self.num_rows * seq * 4 * 3 <= in_memory_bytes:
            full = self.dataset[:]
            self.cache = {c: torch.from_numpy(np.asarray(full[c], dtype=np.int64)) for c in self.COLUMNS}
            self._check_ids(self.cache, np.arange(self.num_rows))

    def read(self, rows: np.ndarray) -> dict:
        """The rows' tensors [len(rows), seq_len], and for preference rows their pair lists."""
        out = self._read(rows)
        if self.pairs is not None:
            out.update({c: [self.pairs[c][int(r)] for r in rows] for c in self.PAIR_COLUMNS})
        return out

    def _read(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        if self.cache is not None:
            idx = torch.from_numpy(rows)
            return {c: self.cache[c].index_select(0, idx) for c in self.COLUMNS}
        order = np.argsort(rows)  # Arrow reads sorted indices faster; restore order after
        batch = self.dataset[rows[order].tolist()]
        inverse = torch.from_numpy(np.argsort(order))
        out = {c: torch.from_numpy(np.asarray(batch[c], dtype=np.int64))[inverse] for c in self.COLUMNS}
        self._check_ids(out, rows)
        return out

    def _check_ids(self, batch: dict[str, torch.Tensor], rows: np.ndarray) -> None:
        """Token ids outside [0, vocab) (a dataset made with another tokenizer whose manifest did
        not say so) would index past the embedding mid-run: a MoaiInputError naming the row."""
        if self.vocab is None or not len(rows):
            return
        ids, labels = batch["input_ids"], batch["labels"]
        bad = (ids < 0) | (ids >= self.vocab) | ((labels != -100) & ((labels < 0) | (labels >= self.vocab)))
        if bool(bad.any()):
            from moai_llm.errors import MoaiInputError

            i = int(bad.any(dim=1).nonzero()[0, 0])
            row = torch.cat([ids[i], labels[i][labels[i] != -100]])
            value = int(row[(row < 0) | (row >= self.vocab)][0])
            raise MoaiInputError(
                f"{self.where}: row {int(rows[i])} holds token id {value}, but the tokenizer has "
                f"{self.vocab} tokens (ids 0..{self.vocab - 1})",
                hint="the dataset was prepared with another tokenizer: prepare it again with this one")
