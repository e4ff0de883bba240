"""Does a plan fit? The memory model (memory.py) applied to a plan and a device's memory.

The planner asks these questions while it decides; `moai doctor` shows `estimate_for(plan)`.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.memory import ModelShape
    >>> from moai_llm.hardware.plan import Plan
    >>> shape = ModelShape.from_config(MoaiConfig.from_preset("2b"))
    >>> plan = Plan(seq_len=1024, device="cuda", precision="bf16", device_memory_bytes=80 * 2**30)
    >>> max_micro_batch(shape, plan, cap=64)     # single process, no checkpointing, 80 GiB
    8
    >>> memory_attention(plan)                   # what the memory model counts for sdpa
    'sdpa-banded'
    >>> import dataclasses
    >>> memory_attention(dataclasses.replace(plan, attention="flex_attention"))
    'flex'
"""

from __future__ import annotations

import math

from moai_llm.hardware.facts import HardwareFacts
from moai_llm.hardware.memory import GIB, MemoryEstimate, ModelShape, estimate, fmt_bytes
from moai_llm.hardware.plan import ATTENTION_FLASH, ATTENTION_FLEX, Plan

GPU_MARGIN = 0.08  # keep 8% of GPU memory free: other allocations, estimate error
CPU_RAM_SHARE = 0.75  # of available RAM, split between processes
CPU_PROCESS_OVERHEAD = 1.5 * GIB  # python + torch + data loading per CPU process


def device_memory(facts: HardwareFacts, nproc: int, gpu: bool, warnings: list[str]) -> int:
    """Usable bytes per process: the smallest GPU (or what is free of it), or a RAM share."""
    if gpu:
        total = facts.min_gpu_memory_bytes
        free = [g.memory_free_mib for g in facts.gpus if g.memory_free_mib is not None]
        if free and min(free) * 1024**2 < 0.9 * total:
            warnings.append(
                f"a GPU has only {fmt_bytes(min(free) * 1024**2)} free of {fmt_bytes(total)}: "
                "another process is using it; the plan uses what is free"
            )
            return min(free) * 1024**2
        return total
    return int(facts.ram_available_bytes * CPU_RAM_SHARE / max(nproc, 1))


def memory_attention(plan: Plan) -> str:
    """The memory model's name for the attention path of `plan`: flash-attn, FlexAttention,
    SDPA's math path (fp32 on CUDA with GQA), or SDPA over packed rows (pretraining rows hold
    documents: a dense block-diagonal mask or a band of key tiles, whichever the batch gets)."""
    if plan.attention == ATTENTION_FLASH:
        return "flash"
    if plan.attention == ATTENTION_FLEX:
        return "flex"
    if plan.device == "cuda" and plan.precision == "fp32":
        return "sdpa-math"
    return "sdpa-banded"


def estimate_for(shape: ModelShape, plan: Plan, micro: int | None = None) -> MemoryEstimate:
    """The memory model's estimate for `plan` (optionally at another micro batch)."""
    return estimate(
        shape, plan.seq_len, micro or plan.micro_batch_size, precision=plan.precision,
        gradient_checkpointing=plan.gradient_checkpointing, loss_chunk_size=plan.loss_chunk_size,
        strategy=plan.strategy, world_size=plan.world_size, device=plan.device,
        attention=memory_attention(plan), lora=plan.lora,
    )


def need_bytes(est: MemoryEstimate, gpu: bool) -> int:
    """What a plan takes of a process's memory: the reserved peak on a GPU; on CPU the
    allocated peak with 15% slack plus the interpreter, torch and data loading."""
    if gpu:
        return math.ceil(est.peak_reserved)
    return math.ceil(est.peak_allocated * 1.15 + CPU_PROCESS_OVERHEAD)


def usable_bytes(memory: int, gpu: bool) -> int:
    """Of a process's memory, what a plan may take: all of its RAM share; a GPU less its margin."""
    return int(memory * (1 - GPU_MARGIN)) if gpu else int(memory)


def fits(est: MemoryEstimate, memory: int, gpu: bool) -> bool:
    return need_bytes(est, gpu) <= usable_bytes(memory, gpu)


def max_micro_batch(shape: ModelShape, plan: Plan, cap: int) -> int:
    """Largest micro batch in [1, cap] that fits (0 if not even 1 fits); memory is monotonic."""
    gpu = plan.device == "cuda"

    def ok(m: int) -> bool:
        return fits(estimate_for(shape, plan, m), plan.device_memory_bytes or 0, gpu)

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= cap and ok(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, cap + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


