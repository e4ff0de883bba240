"""One optimizer step, and what to do when its loss is not finite.

What `TrainStep(step)` does:
1. take this process's micro-batches of the step (`BatchOrder`, the plan's micro batch and
   accumulation) and count, on the host before they move to the device (no device sync), their
   labelled tokens, real tokens and model FLOPs (`metrics.FlopCounter`); the time this takes is
   the step's data wait,
2. sum those counts over the global batch (one all-reduce of three numbers, none for one
   process): the labelled tokens are `num_items_in_batch`,
3. forward/backward each micro-batch under autocast (bf16 where the plan says so; weights stay
   fp32), syncing gradients only on the last one,
4. clip (the gradients are rescaled only when their norm exceeds the limit); if loss and
   gradient norm are finite, AdamW step; then the schedule step.

An out-of-memory error in the first step of a run (a GPU's, or the CPU allocator's) raises
`FirstStepOOM` (launch retries with half the micro batch). A step whose loss or gradient norm
is NaN/inf is skipped (no optimizer step); `NonFiniteGuard` says so, naming the step, and stops
the run once `--max-bad-steps` steps were skipped (the trainer state counts them, so the count
survives a resume). `--max-grad-norm 0` turns clipping off.

    >>> from moai_llm.errors import MoaiRunError
    >>> from moai_llm.training.worker.trainer_state import TrainerState
    >>> guard = NonFiniteGuard(limit=2, say=lambda message: None)
    >>> state = TrainerState()
    >>> for loss in (float("nan"), 2.0, float("inf")):
    ...     result = StepResult(loss, 1.0, 0)
    ...     state = state.after_step(result, global_batch=8)
    ...     try:
    ...         guard.check(result, state)
    ...     except MoaiRunError as exc:
    ...         print(exc.args[0][:69])
    step 3: the loss or gradient norm was NaN/inf at 2 steps (steps 1, 3;
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from moai_llm import faults
from moai_llm.errors import MoaiRunError
from moai_llm.hardware.plan import Plan
from moai_llm.training.worker.batches import BatchOrder, RowReader
from moai_llm.training.worker.distributed import DistInfo
from moai_llm.training.worker.exits import FirstStepOOM


def autocast(device: torch.device, precision: str):
    """bf16 autocast over fp32 weights when the plan says bf16; nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def out_of_memory(exc: BaseException) -> bool:
    """A GPU's OutOfMemoryError, or the CPU allocator's failure (torch raises a RuntimeError
    "DefaultCPUAllocator: can't allocate memory" there).

    >>> out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    True
    >>> out_of_memory(RuntimeError("shape mismatch"))
    False
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


@dataclass
class StepResult:
    loss: float        # mean loss per labelled token of the whole global batch
    grad_norm: float   # before clipping
    tokens: int        # non-padding tokens of the whole global batch
    flops: float = 0.0   # model FLOPs of the whole global batch (metrics.FlopCounter)
    data_s: float = 0.0  # seconds this process spent reading its rows and moving them
    extra: dict[str, float] | None = None  # further figures of the step to log (dpo's rewards)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


class TrainStep:
    """Runs optimizer steps of a run; `step(k)` trains on global samples [k·G, (k+1)·G)."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, scheduler: Any, reader: RowReader,
                 order: BatchOrder, plan: Plan, dist: DistInfo, max_grad_norm: float, pad_id: int,
                 flops: Callable[[torch.Tensor, torch.Tensor], float] | None = None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.reader, self.order, self.plan, self.dist = reader, order, plan, dist
        self.max_grad_norm, self.pad_id, self.flops = max_grad_norm, pad_id, flops
        self.params = list(model.parameters())
        # Torch's fused AdamW divides the gradients by `grad_scale` as it reads them (the hook
        # GradScaler uses): clipping rides along instead of a pass of its own over them.
        self.fold_clip = bool(getattr(optimizer, "defaults", {}).get("fused")) \
            and plan.strategy != "fsdp2"
        self.after_backward: Callable[[], None] | None = None  # e.g. masking gradients (stages)

    def batches(self, step: int) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
        """This process's micro-batches of `step` on the device, and their (labelled tokens,
        real tokens, model FLOPs), counted on the host."""
        rows = self.order.micro_batches(step, self.plan.micro_batch_size,
                                        self.plan.gradient_accumulation_steps, self.dist.rank,
                                        self.dist.world)
        counts = [0.0, 0.0, 0.0]
        out = []
        for r in rows:
            b = self.reader.read(r)
            real = b["input_ids"] != self.pad_id
            counts[0] += int((b["labels"][:, 1:] != -100).sum())
            counts[1] += int(real.sum())
            if self.flops is not None:
                counts[2] += self.flops(b["position_ids"], real)
            out.append({k: v.to(self.dist.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                        for k, v in b.items()})
        return out, counts

    def __call__(self, step: int, first: bool = False) -> StepResult:
        started = time.perf_counter()
        batches, local = self.batches(step)
        data_s = time.perf_counter() - started
        n_items, tokens, flops, *self.more_counts = self.dist.all_sum(local)
        try:
            loss_sum = self._forward_backward(batches, max(n_items, 1.0), faults.nan_at(step + 1))
            if self.after_backward is not None:
                self.after_backward()
            grad_norm = self._clip()
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if first and out_of_memory(exc):
                raise FirstStepOOM(f"out of memory at the first step with micro batch "
                                   f"{self.plan.micro_batch_size}") from exc
            raise
        loss, = self.dist.all_sum([float(loss_sum)])
        result = StepResult(loss, grad_norm, int(tokens), flops, data_s)
        if result.finite:
            self.optimizer.step()
        self.optimizer.grad_scale = None
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step makes torch warn about order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        return result

    def _clip(self) -> float:
        """The gradient norm before clipping. The gradients are scaled by max_norm / (norm +
        1e-6) only when that is below 1 (torch's clip_grad_norm_ would multiply them by 1.0
        otherwise), inside the fused optimizer step where there is one."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        value = float(norm)
        if self.max_grad_norm > 0 and math.isfinite(value) and self.max_grad_norm / (value + 1e-6) < 1.0:
            if self.fold_clip:
                self.optimizer.grad_scale = (norm.float() + 1e-6) / self.max_grad_norm
            else:
                torch.nn.utils.clip_grads_with_norm_(self.params, self.max_grad_norm, norm)
        return value

    def _forward_backward(self, batches: list[dict[str, torch.Tensor]], n_items: float,
                          poison: bool = False) -> torch.Tensor:
        loss_sum = torch.zeros((), device=self.dist.device, dtype=torch.float32)
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") \
                else self.model.no_sync()
            with sync, autocast(self.dist.device, self.plan.precision):
                out = self.model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                                 labels=b["labels"], num_items_in_batch=n_items)
                # DDP averages gradients over processes; the loss is already a share of the
                # global sum, so scale back up to get the global-token mean.
                loss = out.loss * self.dist.world
                if poison:  # MOAI_FAULT_NAN_AT (faults.py): as an overflow would
                    loss = loss * float("nan")
            loss.backward()
            loss_sum += out.loss.detach().float() if not poison else loss.detach().float()
        return loss_sum


class NonFiniteGuard:
    """Says when a step was skipped for a NaN/inf loss or gradient norm; stops the run once
    `limit` steps of it were skipped (the counts live in the trainer state, so they survive a
    resume; the last steps skipped are kept here for the message)."""

    def __init__(self, limit: int, say: Callable[[str], None] | None):
        self.limit, self.say = limit, say
        self.bad: list[int] = []

    def check(self, result: StepResult, state: Any) -> None:
        """`state`: the trainer state after the step that gave `result`."""
        if result.finite:
            return
        self.bad = [*self.bad[-4:], state.step]
        if self.say is not None:
            self.say(f"step {state.step}: loss {result.loss} / grad norm {result.grad_norm} is not "
                     f"finite; step skipped ({state.skipped_steps} of --max-bad-steps {self.limit})")
        if state.skipped_steps >= self.limit:
            steps = ", ".join(str(s) for s in self.bad)
            raise MoaiRunError(
                f"step {state.step}: the loss or gradient norm was NaN/inf at {state.skipped_steps} "
                f"steps (steps {steps}{', ...' if state.skipped_steps > len(self.bad) else ''}; "
                f"--max-bad-steps {self.limit}); training stopped, final_model/ not written, "
                "checkpoints so far are kept",
                hint="lower --learning-rate, use more warmup, or check the data",
            )

    def check_trained(self, state: Any, start_step: int, start_skipped: int) -> None:
        """A run whose every step was skipped (fewer than `limit` steps) trained nothing: it
        stops (exit 1) instead of writing the untouched model as its result."""
        done, skipped = state.step - start_step, state.skipped_steps - start_skipped
        if done > 0 and skipped == done:
            raise MoaiRunError(
                f"step {state.step}: every step of this run ({done}) had a NaN/inf loss or gradient "
                "norm and was skipped; nothing trained, final_model/ not written",
                hint="lower --learning-rate, check the data, or check the starting model")
