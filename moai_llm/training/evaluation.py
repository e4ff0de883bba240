"""Evaluation during training: the mean loss on held-out rows every `--eval-steps`.

With `--eval-steps N` the last rows of the prepared dataset (1%, between 1 and 256) are held
out: training never sees them (`BatchOrder` is built over the rows before them) and every N
steps their mean loss per labelled token is logged as `eval_loss`. Every process runs the
same number of forwards (FSDP2 needs all of them in each one); padding chunks count zero.

    >>> HeldOut(num_rows=10_000, eval_steps=50).rows, HeldOut(num_rows=10_000, eval_steps=0).rows
    (100, 0)
    >>> HeldOut(num_rows=10_000, eval_steps=50).due(100), HeldOut(10_000, 50).due(120)
    (True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from moai_llm.training.batches import RowReader
from moai_llm.training.distributed import DistInfo
from moai_llm.training.step import autocast

MAX_HELD_OUT = 256


class HeldOut:
    """Which rows are held out, and when to evaluate on them."""

    def __init__(self, num_rows: int, eval_steps: int):
        self.num_rows, self.eval_steps = num_rows, eval_steps
        self.rows = max(1, min(MAX_HELD_OUT, num_rows // 100)) if eval_steps and num_rows > 1 else 0

    @property
    def train_rows(self) -> int:
        return self.num_rows - self.rows

    def due(self, done: int) -> bool:
        return bool(self.rows) and done % self.eval_steps == 0

    def __call__(self, model: torch.nn.Module, reader: RowReader, micro: int, dist: DistInfo,
                 precision: str) -> dict[str, Any]:
        loss = evaluate(model, reader, range(self.train_rows, self.num_rows), micro, dist, precision)
        return {"eval_loss": round(loss, 6)}


def evaluate(model: torch.nn.Module, reader: RowReader, rows: range, micro: int, dist: DistInfo,
             precision: str) -> float:
    """Mean loss per labelled token over `rows`, over all processes."""
    model.eval()
    total = count = 0.0
    chunks = [list(rows[i:i + micro]) for i in range(0, len(rows), micro)]
    per_rank = -(-len(chunks) // dist.world)
    mine = chunks[dist.rank * per_rank:(dist.rank + 1) * per_rank]
    mine = [(c, True) for c in mine] + [(chunks[0], False)] * (per_rank - len(mine))
    with torch.no_grad():
        for chunk, counts in mine:
            b = {k: v.to(dist.device) for k, v in reader.read(np.asarray(chunk)).items()}
            n = int((b["labels"][:, 1:] != -100).sum())
            with autocast(dist.device, precision):
                out = model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                            labels=b["labels"], num_items_in_batch=max(n, 1))
            if counts and n:
                total += float(out.loss) * n
                count += n
    model.train()
    total, count = dist.all_sum([total, count])
    return total / max(count, 1)
