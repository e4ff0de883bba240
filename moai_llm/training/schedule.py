"""Learning-rate schedules: warmup-stable-decay (WSD), cosine, linear and constant.

One multiplier function covers all four: a linear warmup, a flat stable phase, then a decay
to `min_lr_ratio` (cosine or linear shape). Lengths are steps (int >= 1) or fractions of the
run (float < 1), so `warmup: 0.01` and `warmup: 20` both work, as in WSD papers and the seed.
The scheduler is a plain `LambdaLR`, whose state (`last_epoch`) resumes exactly. The launcher
resolves the schedule once (`make_schedule`: an unknown name or phases longer than the run are
refused before anything is written) and records it in run.yaml; the worker builds the
scheduler from that record (`Schedule.from_dict`).

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> schedule = make_schedule("wsd", total_steps=1000, warmup=0.01, decay=0.2, min_lr_ratio=0.0)
    >>> sched = build_scheduler(opt, schedule)
    >>> for _ in range(10):
    ...     opt.step(); sched.step()
    >>> sched.get_last_lr()     # warmup (10 steps) done: the stable phase
    [1.0]
    >>> schedule.to_dict()["decay_start"], Schedule.from_dict(schedule.to_dict()) == schedule
    (800, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import SEED_SCHEDULES, WSD_DECAY

SCHEDULES = ("wsd", "cosine", "linear", "constant")


def resolve_steps(value: float | int | None, total_steps: int, name: str) -> int:
    """Turn a length given as steps (>= 1) or as a fraction of the run (< 1) into steps."""
    if value is None:
        return 0
    value = float(value)
    if value < 0:
        raise MoaiInputError(f"{name} must be >= 0, got {value:g}")
    if value < 1:
        return int(round(value * total_steps))
    if value != int(value):
        raise MoaiInputError(f"{name} {value:g} is neither a whole number of steps nor a fraction < 1")
    return int(value)


@dataclass(frozen=True)
class Schedule:
    """Phase lengths in steps plus the shape of the decay."""

    kind: str
    total_steps: int
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    min_lr_ratio: float = 0.0

    @property
    def decay_start(self) -> int:
        """The first step (0-based) of the decay."""
        return self.warmup_steps + self.stable_steps

    def to_dict(self) -> dict[str, Any]:
        """run.yaml's `schedule` section: the phases in steps (and where the decay starts)."""
        return {**asdict(self), "decay_start": self.decay_start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(**{k: v for k, v in data.items() if k != "decay_start"})

    def multiplier(self, step: int) -> float:
        """Learning-rate factor at optimizer step `step` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        into_decay = step - self.warmup_steps - self.stable_steps
        if into_decay < 0:
            return 1.0
        progress = min(1.0, (into_decay + 1) / max(1, self.decay_steps))
        if self.kind == "linear":
            shape = 1.0 - progress
        else:  # cosine and wsd share the cosine-shaped decay (WSD's usual "cooldown")
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def make_schedule(
    kind: str,
    total_steps: int,
    *,
    warmup: float | int | None,
    min_lr_ratio: float,
    stable: float | int | None = None,
    decay: float | int | None = None,
) -> Schedule:
    """Resolve phase lengths (None = not given). For WSD an unset decay is `WSD_DECAY` of the run
    and an unset stable phase takes what warmup and decay leave; for cosine/linear the decay
    fills the rest. The run's values come from TrainSettings; none are defaulted here.

    >>> make_schedule("wsd", 100, warmup=10, decay=None, min_lr_ratio=0.0).stable_steps
    70
    """
    kind = SEED_SCHEDULES.get(kind, kind)
    if kind not in SCHEDULES:
        raise MoaiInputError(
            f"unknown learning-rate schedule {kind!r}", hint=f"use one of {', '.join(SCHEDULES)}"
        )
    if total_steps < 1:
        raise MoaiInputError(f"the run has {total_steps} steps; it needs at least 1")
    w = min(resolve_steps(warmup, total_steps, "warmup"), total_steps)
    if kind == "wsd":
        d = resolve_steps(WSD_DECAY if decay is None else decay, total_steps, "decay")
        s = total_steps - w - d if stable is None else resolve_steps(stable, total_steps, "stable")
    elif kind == "constant":
        s, d = total_steps - w, 0
    else:
        s = 0 if stable is None else resolve_steps(stable, total_steps, "stable")
        d = total_steps - w - s if decay is None else resolve_steps(decay, total_steps, "decay")
    s, d = max(0, s), max(0, d)
    if w + s + d > total_steps:
        raise MoaiInputError(
            f"warmup {w} + stable {s} + decay {d} steps exceed the run's {total_steps} steps",
            hint="shorten a phase or give lengths as fractions (e.g. --warmup-steps 0.05)",
        )
    return Schedule(kind, total_steps, w, s, d, float(min_lr_ratio))


def build_scheduler(optimizer: Any, schedule: Schedule) -> Any:
    """A torch LambdaLR over `schedule.multiplier`; its state_dict holds only `last_epoch` etc."""
    import torch

    # A plain function (not a bound method) so that state_dict() stores no callable state.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.multiplier(step))
