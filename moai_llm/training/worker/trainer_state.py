"""Where a run stands: the trainer state, one value saved in every checkpoint.

`TrainerState` is immutable. The loop replaces it after every optimizer step
(`state.after_step(result, global_batch)`), a checkpoint stores exactly the state it is given
(its `step` included: the folder is `step-{state.step}` and trainer_state.json says the same
step), and a resumed run starts from the state it loads. So the step a checkpoint records is
always the step its weights are at, however many times the run was resumed.

The data position is one number, `samples_consumed` (= step × global batch): step s trains
on global samples [s·G, (s+1)·G) whatever the number of processes (batches.py).

    >>> from moai_llm.training.worker.step import StepResult
    >>> s = TrainerState(global_batch=8, max_steps=100)
    >>> s = s.after_step(StepResult(loss=2.5, grad_norm=1.0, tokens=512), global_batch=8)
    >>> s = s.after_step(StepResult(loss=float("nan"), grad_norm=1.0, tokens=512), global_batch=8)
    >>> s.step, s.samples_consumed, s.tokens, s.loss, s.skipped_steps, s.consecutive_nan
    (2, 16, 1024, 2.5, 1, 1)
    >>> TrainerState.from_json(s.to_json()) == s
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainerState:
    step: int = 0                   # optimizer steps done
    samples_consumed: int = 0       # data position: global samples trained on
    tokens: int = 0                 # non-padding tokens trained on (all processes)
    skipped_steps: int = 0          # steps skipped for a NaN/inf loss or gradient norm
    consecutive_nan: int = 0        # of those, in a row up to now
    loss: float | None = None       # the last finite loss (what a finished run reports)
    global_batch: int = 0           # sequences per step: a resume must keep it (data position)
    world_size: int = 1             # processes that saved it (any number may resume it)
    max_steps: int = 0              # the run's --max-steps (its schedule's length) when saved

    def after_step(self, result: Any, global_batch: int) -> TrainerState:
        """The state after one more optimizer step with `result` (a step.StepResult)."""
        finite = math.isfinite(result.loss) and math.isfinite(result.grad_norm)
        return dataclasses.replace(
            self, step=self.step + 1, samples_consumed=(self.step + 1) * global_batch,
            tokens=self.tokens + int(result.tokens),
            skipped_steps=self.skipped_steps + (not finite),
            consecutive_nan=0 if finite else self.consecutive_nan + 1,
            loss=float(result.loss) if finite else self.loss)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerState:
        """From trainer_state.json (keys it does not know are ignored; missing ones default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
