"""Evaluation during training: the mean loss on held-out rows and bits per byte of held-out
text, every `--eval-steps`.

- `--eval-steps N` alone: the last rows of the prepared dataset (1%, between 1 and 256) are
  held out: training never sees them (`BatchOrder` is built over the rows before them) and
  every N steps their mean loss per labelled token is logged as `eval_loss`.
- `--eval-text SOURCE` (repeatable, `--eval-text-column`): held-out text, read and packed once
  before the first step by every process (deterministic, so all hold the same rows:
  `moai_llm.eval.prepare_eval_text`), scored as `eval_bpb` (bits per byte,
  `moai_llm.eval.score_rows`: every process scores its share, the sums are all-reduced) at
  the start of a fresh run (step 0) and every N steps. The text is the held-out set then: no
  rows are taken from the training data.

Every process runs the same number of forwards (FSDP2 needs all of them in each one);
padding chunks count zero.

    >>> RunEvaluation(num_rows=10_000, eval_steps=50).rows, RunEvaluation(num_rows=10_000, eval_steps=0).rows
    (100, 0)
    >>> RunEvaluation(num_rows=10_000, eval_steps=50).due(100), RunEvaluation(10_000, 50).due(120)
    (True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from moai_llm.training.worker.batches import RowReader
from moai_llm.training.worker.distributed import DistInfo
from moai_llm.training.worker.step import autocast

MAX_HELD_OUT = 256


class RunEvaluation:
    """What is evaluated (held-out rows, held-out text) and when."""

    def __init__(self, num_rows: int, eval_steps: int, text: Any = None):
        self.num_rows, self.eval_steps, self.text = num_rows, eval_steps, text
        self.rows = max(1, min(MAX_HELD_OUT, num_rows // 100)) \
            if eval_steps and num_rows > 1 and text is None else 0

    @property
    def at_ends(self) -> bool:
        """Scored before a fresh run's first step and at its last step too (held-out text)."""
        return self.text is not None

    @property
    def train_rows(self) -> int:
        return self.num_rows - self.rows

    def due(self, done: int) -> bool:
        return bool(self.rows or self.text is not None) and bool(self.eval_steps) \
            and done % self.eval_steps == 0

    def __call__(self, model: torch.nn.Module, reader: RowReader, micro_batch_size: int, dist: DistInfo,
                 precision: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.rows:
            loss = evaluate(model, reader, range(self.train_rows, self.num_rows), micro_batch_size, dist, precision)
            out["eval_loss"] = round(loss, 6)
        if self.text is not None:
            out["eval_bpb"] = round(self.bits_per_byte(model, micro_batch_size, dist, precision), 6)
        return out

    def bits_per_byte(self, model: torch.nn.Module, micro_batch_size: int, dist: DistInfo,
                      precision: str) -> float:
        """Bits per byte of the held-out text, over all processes."""
        from moai_llm.eval.scoring import score_rows

        with autocast(dist.device, precision):
            scores = score_rows(model, self.text, micro_batch_size, all_sum=dist.all_sum, rank=dist.rank,
                                world_size=dist.world)
        return scores["bits_per_byte"]


def evaluate(model: torch.nn.Module, reader: RowReader, rows: range, micro_batch_size: int, dist: DistInfo,
             precision: str) -> float:
    """Mean loss per labelled token over `rows`, over all processes."""
    model.eval()
    total = count = 0.0
    chunks = [list(rows[i:i + micro_batch_size]) for i in range(0, len(rows), micro_batch_size)]
    per_rank = -(-len(chunks) // dist.world)
    mine = chunks[dist.rank * per_rank:(dist.rank + 1) * per_rank]
    mine = [(c, True) for c in mine] + [(chunks[0], False)] * (per_rank - len(mine))
    with torch.no_grad():
        for chunk, counts in mine:
            b = {k: v.to(dist.device) for k, v in reader.read(np.asarray(chunk)).items() if k in reader.COLUMNS}
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
