"""Memory and disk, checked against the plan before anything is allocated or written.

The planner (hardware/planner.py) decides the plan and predicts its peak memory per process;
these guards read that plan and refuse a run that cannot work, with exit 2 and what would:

- memory: the plan's predicted need against the memory a process has (its share of the RAM
  moai_llm.resources.available_memory reports on CPU, the GPU's memory less a margin on GPU).
  A micro batch that does not fit (yours, or what your --global-batch and accumulation make)
  is refused with the largest that fits; a plan where not even micro batch 1 fits is refused
  with the largest --seq-len that fits. `--dry-run`/`--simulate` allocate nothing and are not
  refused: they show the plan with its warning.
- disk: `--save-total-limit` checkpoints (fp32 weights, AdamW moments, tokenizer) + the one
  being written + final_model/ against the free space of the output folder's disk: refused
  when they do not fit, with what they need and what is free.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.plan import Plan
    >>> plan = Plan(seq_len=64, micro_batch_size=10**7, device_memory_bytes=8 * 2**30)
    >>> try:
    ...     check_memory(plan, MoaiConfig.from_preset("tiny"))
    ... except NotEnoughMemoryError as exc:
    ...     print(exc.largest, str(exc).split(" (")[0])
    5189 --batch-size 10000000: needs about 12.2 TiB of memory
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from moai_llm.errors import DiskFullError, NotEnoughMemoryError  # noqa: F401 (doctest)


def check_memory(plan: Any, config: Any) -> None:
    """Refuse (NotEnoughMemoryError, exit 2) a plan whose predicted memory does not fit."""
    from moai_llm.hardware.fit import GPU_MARGIN, estimate_for, need_bytes, usable_bytes
    from moai_llm.hardware.memory import ModelShape
    from moai_llm.resources import Memory
    from moai_llm.resources import check_memory as refuse_above

    shape = ModelShape.from_config(config)
    gpu = plan.device == "cuda"
    budget = usable_bytes(plan.device_memory_bytes or 0, gpu)
    if need_bytes(estimate_for(shape, plan), gpu) <= budget:
        return
    where = (f"GPU memory less a {GPU_MARGIN:.0%} margin" if gpu else
             "this process's share of RAM" if plan.world_size == 1 else
             f"this process's share of RAM, one of {plan.nproc_per_node} on this machine")
    available = Memory(budget, where)
    what = (f" ({plan.strategy}, seq-len {plan.seq_len}, gradient checkpointing "
            f"{'on' if plan.gradient_checkpointing else 'off'}, {plan.precision})")
    if need_bytes(estimate_for(shape, plan, 1), gpu) <= budget:
        refuse_above("--batch-size", plan.micro_batch_size,
                     lambda m: need_bytes(estimate_for(shape, plan, m), gpu), low=1,
                     available=available, what=what)
    longest = int(getattr(config, "max_position_embeddings", 0) or plan.seq_len)
    refuse_above("--seq-len", plan.seq_len,
                 lambda n: need_bytes(estimate_for(shape, dataclasses.replace(plan, seq_len=n), 1), gpu),
                 low=8, high=longest, available=available, what=f"{what[:-1]}, micro batch 1)")


def check_disk(out: Path, config: Any, keep: int, tokenizer_dir: str | Path | None) -> None:
    """Refuse (DiskFullError, exit 2) when the kept checkpoints, the one being written and
    final_model/ do not fit on the disk of `out`."""
    from moai_llm.config import parameter_count
    from moai_llm.hardware.checks import FAIL, checkpoint_bytes, disk_for_run
    from moai_llm.resources import free_disk
    from moai_llm.training.worker.checkpoint import list_checkpoints

    sizes = checkpoint_bytes(parameter_count(config), None, str(tokenizer_dir) if tokenizer_dir else None)
    free = free_disk(out)
    check = disk_for_run(free, sizes, keep, str(out), existing=len(list_checkpoints(out)))
    if check.status == FAIL:
        raise DiskFullError(check.message, str(out), sizes["checkpoint"], free, hint=check.fix)
