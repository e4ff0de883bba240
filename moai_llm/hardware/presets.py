"""Plans from facts: hardware facts + model + sequence length + global batch -> `Plan`.

    >>> from moai_llm.hardware.presets import make_plan
    >>> from moai_llm.hardware.probe import simulate
    >>> from moai_llm.config import MoaiConfig
    >>> plan = make_plan(simulate("8xA100-80GB"), MoaiConfig.from_preset("3b"), seq_len=1024)
    >>> plan.micro_batch_size, plan.gradient_accumulation_steps
    (8, 8)
    >>> plan.reasons["strategy"]             # doctest: +ELLIPSIS
    'fsdp2: DDP without checkpointing fits micro batch 1 only (target 4), ...'

Every decision is made here, once, from the memory model (memory.py) and the facts, and
carries a one-line reason. The user's explicit choices arrive as `overrides` and win.

Order of decisions: processes -> precision -> global batch -> loss chunk -> (strategy,
checkpointing) -> micro batch -> accumulation -> environment. Strategy and checkpointing are
chosen together: the first of DDP without checkpointing, FSDP2 without, DDP with, FSDP2 with,
that reaches a micro batch of ~4k tokens (enough to keep a GPU busy at 0.5-3B); otherwise the
one with the largest micro batch. DDP is preferred because it communicates least;
checkpointing last because it costs ~a third more compute.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.hardware.facts import P2P_NONE, HardwareFacts
from moai_llm.hardware.memory import GIB, MemoryEstimate, ModelShape, estimate, fmt_bytes
from moai_llm.hardware.plan import Plan

GPU_MARGIN = 0.08  # keep 8% of GPU memory free: other allocations, estimate error
CPU_RAM_SHARE = 0.75  # of available RAM, split between processes
CPU_PROCESS_OVERHEAD = 1.5 * GIB  # python + torch + data loading per CPU process
TARGET_MICRO_TOKENS = 4096  # tokens per micro batch that keep a GPU busy at 0.5-3B
CHUNK_RANGE = (512, 8192)  # fused CE chunk sizes considered (powers of two)
NCCL_HEARTBEAT_S = "1800"  # checkpoint saves and first-step compiles can exceed the 480 s default

__all__ = ["Plan", "default_global_batch", "estimate_for", "make_plan", "plan_rows"]

_OVERRIDABLE = {
    "nnodes", "nproc_per_node", "micro_batch_size", "gradient_accumulation_steps",
    "loss_chunk_size", "gradient_checkpointing", "strategy", "precision",
}


def default_global_batch(params: int) -> tuple[int, str]:
    """Sequences per optimizer step by model size (the seed recommends 256-512 for 1-3B)."""
    if params < 50e6:
        return 32, "32 sequences: a tiny model learns fine with small batches"
    if params < 300e6:
        return 128, "128 sequences for a model under 300M parameters"
    if params < 1e9:
        return 256, "256 sequences for a 0.3-1B model (the seed recommends 256-512 for 1-3B)"
    if params < 2.5e9:
        return 384, "384 sequences for a 1-2.5B model (middle of the seed's 256-512)"
    return 512, "512 sequences for a model of 2.5B parameters or more (the seed's upper end)"


def _uses_gpu(facts: HardwareFacts) -> bool:
    return bool(facts.gpus) and facts.cuda_available


def _device_memory(facts: HardwareFacts, nproc: int, gpu: bool, warnings: list[str]) -> int:
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


def _fits(est: MemoryEstimate, memory: int, gpu: bool) -> bool:
    if gpu:
        return est.peak_reserved <= memory * (1 - GPU_MARGIN)
    return est.peak_allocated * 1.15 + CPU_PROCESS_OVERHEAD <= memory


def estimate_for(shape: ModelShape, plan: Plan, micro: int | None = None) -> MemoryEstimate:
    """The memory model's estimate for `plan` (optionally at another micro batch)."""
    return estimate(
        shape, plan.seq_len, micro or plan.micro_batch_size, precision=plan.precision,
        gradient_checkpointing=plan.gradient_checkpointing, loss_chunk_size=plan.loss_chunk_size,
        strategy=plan.strategy, world_size=plan.world_size, device=plan.device,
        attention=plan_attention(plan),
    )


def plan_attention(plan: Plan) -> str:
    """The attention path training will take, for the memory model: flash-attn when the plan
    found it usable, SDPA's math path for fp32 on CUDA, else SDPA over packed rows (pretraining
    rows hold several documents)."""
    if plan.attention == "flash":
        return "flash"
    if plan.device == "cuda" and plan.precision == "fp32":
        return "sdpa-math"
    return "sdpa-packed"


def _max_micro(shape, plan: Plan, memory: int, gpu: bool, cap: int) -> int:
    """Largest micro batch in [1, cap] that fits (0 if not even 1 fits); memory is monotonic."""
    ok = lambda m: _fits(estimate_for(shape, plan, m), memory, gpu)  # noqa: E731
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


def _chunk_size(shape: ModelShape, memory: int, precision: str, gpu: bool) -> tuple[int, str]:
    budget = min(2 * GIB, max(256 * 1024**2, 0.03 * memory)) if gpu else 256 * 1024**2
    per_entry = 6 if precision == "bf16" else 4
    chunk = CHUNK_RANGE[1]
    while chunk > CHUNK_RANGE[0] and chunk * shape.vocab * per_entry > budget:
        chunk //= 2
    return chunk, (
        f"{chunk} tokens: one chunk of logits ({chunk} x vocab {shape.vocab} x {per_entry} B = "
        f"{fmt_bytes(chunk * shape.vocab * per_entry)}) stays under {fmt_bytes(budget)}; "
        "full logits are never materialised"
    )


def _pick_micro(max_micro: int, share: int, global_batch: int, world: int) -> int:
    """Largest micro batch <= max_micro that divides the per-process share exactly, unless that
    would more than halve it (then max_micro, and accumulation rounds the global batch)."""
    best = max(m for m in range(1, max_micro + 1) if share % m == 0 or m == 1)
    if global_batch % world == 0 and best * 2 > max_micro:
        return best
    return max_micro


def make_plan(
    facts: HardwareFacts,
    model_config: Any,
    seq_len: int,
    global_batch: int | None = None,
    **overrides: Any,
) -> Plan:
    """The plan for training `model_config` at `seq_len` on `facts` (see module docstring)."""
    bad = set(overrides) - _OVERRIDABLE
    if bad:
        raise MoaiInputError(f"make_plan: unknown override(s) {sorted(bad)}",
                             hint="overridable: " + ", ".join(sorted(_OVERRIDABLE)))
    if seq_len < 1:
        raise MoaiInputError(f"--seq-len {seq_len}: must be at least 1")
    shape = ModelShape.from_config(model_config)
    gpu = _uses_gpu(facts)
    r: dict[str, str] = {}
    warnings: list[str] = []
    plan = Plan(seq_len=seq_len, device="cuda" if gpu else "cpu",
                backend="nccl" if gpu else "gloo", hardware=facts.summary(),
                model=shape.summary(), warnings=warnings, reasons=r)
    if facts.gpus and not facts.cuda_available:
        warnings.append("NVIDIA GPUs are present but torch cannot use them (CPU build of torch "
                        "or driver problem): planning for the CPU")

    # processes
    plan.nnodes = int(overrides.get("nnodes") or facts.nnodes or 1)
    if "nproc_per_node" in overrides:
        plan.nproc_per_node = int(overrides["nproc_per_node"])
        r["nproc_per_node"] = f"{plan.nproc_per_node} (set by you)"
        if gpu and plan.nproc_per_node > facts.gpu_count:
            warnings.append(f"{plan.nproc_per_node} processes for {facts.gpu_count} GPUs: "
                            "processes would share a GPU")
    elif gpu:
        plan.nproc_per_node = facts.gpu_count
        r["nproc_per_node"] = f"{facts.gpu_count}: one process per GPU"
    else:
        plan.nproc_per_node = 1
        r["nproc_per_node"] = ("1 CPU process using every core: intra-op threads scale better "
                               "on CPU than gloo all-reduces between processes")
    r["nnodes"] = (f"{plan.nnodes} nodes (from the environment/flags)" if plan.nnodes > 1
                   else "1 node")
    world = plan.world_size
    if len(facts.gpu_names) > 1:
        warnings.append(f"mixed GPU types {facts.gpu_names}: planning for the smallest memory; "
                        "the slowest GPU sets the pace")

    # precision
    cc = min((g.cc_major for g in facts.gpus), default=0)
    if "precision" in overrides:
        plan.precision = overrides["precision"]
        r["precision"] = f"{plan.precision} (set by you)"
    elif gpu and cc >= 8:
        plan.precision = "bf16"
        r["precision"] = "bf16 autocast over fp32 weights: compute capability >= 8.0 has bf16 tensor cores"
    elif gpu:
        plan.precision = "fp32"
        r["precision"] = "fp32: no bf16 before compute capability 8.0 (moai does not use fp16 loss scaling)"
    else:
        plan.precision = "fp32"
        r["precision"] = "fp32 on CPU (bf16 autocast on CPU is slower on most CPUs)"
    plan.tf32 = gpu and cc >= 8
    if gpu and plan.precision == "bf16" and facts.flash_attn_version:
        plan.attention = "flash"
        r["attention"] = (f"flash-attn {facts.flash_attn_version}: varlen kernels for packed "
                          "rows, no mask")
    else:
        plan.attention = "sdpa"
        r["attention"] = ("sdpa: packed rows get a block-diagonal mask (k/v repeated per head, "
                          "a seq_len x seq_len mask per layer; counted in the memory estimate)")
    if gpu:
        r["tf32"] = ("on: TF32 matmuls for the fp32 parts (Ampere and newer)" if plan.tf32
                     else "off: TF32 needs compute capability >= 8.0")

    # global batch
    if global_batch:
        target, r["global_batch"] = int(global_batch), f"{global_batch} sequences (set by you)"
    else:
        target, r["global_batch"] = default_global_batch(shape.params)
    share = max(1, math.ceil(target / world))

    memory = _device_memory(facts, plan.nproc_per_node, gpu, warnings)
    plan.device_memory_bytes = memory
    if "loss_chunk_size" in overrides:
        plan.loss_chunk_size = int(overrides["loss_chunk_size"])
        r["loss_chunk_size"] = f"{plan.loss_chunk_size} (set by you)"
    else:
        plan.loss_chunk_size, r["loss_chunk_size"] = _chunk_size(shape, memory, plan.precision, gpu)

    # strategy and checkpointing
    target_micro = min(share, max(1, math.ceil(TARGET_MICRO_TOKENS / seq_len)))
    strategies = ["single"] if world == 1 else ["ddp", "fsdp2"]
    if "strategy" in overrides:
        strategies = [overrides["strategy"]]
    ckpts = [False, True]
    if "gradient_checkpointing" in overrides:
        ckpts = [bool(overrides["gradient_checkpointing"])]
    candidates = []
    for ckpt in ckpts:
        for strat in strategies:
            trial = dataclasses.replace(plan, strategy=strat, gradient_checkpointing=ckpt,
                                        reasons=r, warnings=warnings)
            candidates.append((trial, _max_micro(shape, trial, memory, gpu, share)))
    good = [c for c in candidates if c[1] >= target_micro]
    if good:
        chosen, max_micro = good[0]
    elif any(m for _, m in candidates):
        chosen, max_micro = max(candidates, key=lambda c: c[1])
    else:  # nothing fits: plan the most frugal setup and say so
        chosen, max_micro = candidates[-1]
    plan.strategy, plan.gradient_checkpointing = chosen.strategy, chosen.gradient_checkpointing
    _explain_strategy(plan, shape, memory, candidates, target_micro, overrides)

    # micro batch and accumulation
    if "micro_batch_size" in overrides:
        plan.micro_batch_size = int(overrides["micro_batch_size"])
        r["micro_batch_size"] = f"{plan.micro_batch_size} (set by you)"
        if max_micro < plan.micro_batch_size:
            warnings.append(f"micro batch {plan.micro_batch_size} is predicted not to fit "
                            f"(largest that fits: {max_micro})")
    elif max_micro == 0:
        plan.micro_batch_size = 1
        est = estimate_for(shape, plan, 1)
        need = est.peak_reserved if gpu else est.peak_allocated
        warnings.append(
            f"does not fit: even micro batch 1 needs ~{fmt_bytes(need)} per process, "
            f"{fmt_bytes(memory)} available; use more GPUs (FSDP2 shards the states), a shorter "
            "--seq-len or a smaller model"
        )
        r["micro_batch_size"] = "1: nothing larger can fit (see warnings)"
    else:
        plan.micro_batch_size = _pick_micro(max_micro, share, target, world)
        r["micro_batch_size"] = (
            f"{plan.micro_batch_size}: largest that fits with {int(GPU_MARGIN * 100)}% margin "
            f"(max {max_micro}) and divides the {share} sequences per process"
            if gpu else f"{plan.micro_batch_size}: largest that fits in this process's RAM share "
            f"and divides the {share} sequences per process"
        )
    if "gradient_accumulation_steps" in overrides:
        plan.gradient_accumulation_steps = int(overrides["gradient_accumulation_steps"])
        r["gradient_accumulation_steps"] = f"{plan.gradient_accumulation_steps} (set by you)"
    else:
        plan.gradient_accumulation_steps = max(1, round(target / (plan.micro_batch_size * world)))
        note = "" if plan.global_batch == target else f" (nearest to the target {target})"
        r["gradient_accumulation_steps"] = (
            f"{plan.gradient_accumulation_steps}: {plan.micro_batch_size} x "
            f"{plan.gradient_accumulation_steps} x {world} processes = global batch "
            f"{plan.global_batch}{note}"
        )
    est = estimate_for(shape, plan)
    plan.predicted_peak_bytes = est.peak_reserved if gpu else est.peak_allocated
    r["memory"] = (f"predicted peak {fmt_bytes(plan.predicted_peak_bytes)} per process of "
                   f"{fmt_bytes(memory)}")
    _environment(plan, facts, gpu)
    return plan


def _explain_strategy(plan, shape, memory, candidates, target_micro, overrides) -> None:
    r = plan.reasons
    found = {(c.strategy, c.gradient_checkpointing): m for c, m in candidates}
    if "strategy" in overrides:
        r["strategy"] = f"{plan.strategy} (set by you)"
    elif plan.strategy == "single":
        r["strategy"] = "single process"
    elif plan.strategy == "ddp":
        r["strategy"] = ("ddp: replicated weights, gradients and AdamW states "
                         f"({fmt_bytes(20 * shape.params)} with buckets) fit; least communication")
    else:
        ckpt = plan.gradient_checkpointing
        ddp_same = found.get(("ddp", ckpt), 0)
        mine = found.get(("fsdp2", ckpt), 0)
        if max(found.get(("ddp", False), 0), found.get(("ddp", True), 0)) == 0:
            why = "replicated states do not fit"
        else:
            why = (f"DDP {'with' if ckpt else 'without'} checkpointing fits micro batch "
                   f"{ddp_same} only (target {target_micro}), sharded states leave room for {mine}")
        r["strategy"] = (f"fsdp2: {why} (DDP needs {fmt_bytes(20 * shape.params)} for weights, "
                         f"gradients, AdamW and buckets of {fmt_bytes(memory)}); sharded over "
                         f"{plan.world_size} processes")
    if "gradient_checkpointing" in overrides:
        r["gradient_checkpointing"] = f"{plan.gradient_checkpointing} (set by you)"
    elif max(found.values()) == 0:
        r["gradient_checkpointing"] = f"{plan.gradient_checkpointing}: nothing fits either way"
    elif plan.gradient_checkpointing:
        off = found.get((plan.strategy, False), 0)
        r["gradient_checkpointing"] = (
            f"on: without it only micro batch {off} fits (target {target_micro} = "
            f"~{TARGET_MICRO_TOKENS} tokens); recomputing layers costs ~1/3 more compute"
        )
    else:
        r["gradient_checkpointing"] = (
            f"off: micro batch {found.get((plan.strategy, False), 0)} fits without it "
            f"(target {target_micro}), so no recompute cost"
        )


def _environment(plan: Plan, facts: HardwareFacts, gpu: bool) -> None:
    env, r = plan.env, plan.reasons
    if not gpu:
        threads = max(1, facts.cpu_cores // plan.nproc_per_node)
        env["OMP_NUM_THREADS"] = str(threads)
        r["OMP_NUM_THREADS"] = (f"{threads}: {facts.cpu_cores} cores / {plan.nproc_per_node} "
                                "processes (torchrun would set 1)")
        r["backend"] = "gloo: the CPU backend of torch.distributed"
        return
    env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    r["PYTORCH_CUDA_ALLOC_CONF"] = ("expandable_segments: less fragmentation when batch shapes "
                                    "vary; the memory model assumes ~5% allocator slack")
    if plan.tf32:
        env["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = "1"
    if plan.world_size == 1:
        return
    r["backend"] = "nccl: GPU collectives"
    r["dist_timeout_s"] = (f"{plan.dist_timeout_s}: init_process_group timeout; ranks wait in a "
                           "collective while rank 0 writes a checkpoint (default 600 s)")
    env["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] = NCCL_HEARTBEAT_S
    r["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] = (f"{NCCL_HEARTBEAT_S}: rank 0 saving a checkpoint "
                                             "must not look like a hang (default 480 s)")
    pairs = facts.p2p_pairs()
    total = sum(pairs.values())
    if plan.nproc_per_node > 1 and total and pairs[P2P_NONE] == total:
        env["NCCL_P2P_DISABLE"] = "1"
        r["NCCL_P2P_DISABLE"] = ("1: NVML reports no P2P between any GPU pair; NCCL goes "
                                 "through host memory (older drivers advertised P2P and hung)")
    elif pairs.get(P2P_NONE):
        r["NCCL_P2P_DISABLE"] = (f"unset: {pairs[P2P_NONE]} of {total} GPU pairs lack P2P; NCCL "
                                 "routes those through host memory and keeps P2P for the rest")
    elif total:
        r["NCCL_P2P_DISABLE"] = "unset: P2P available between every GPU pair"
    if not facts.infiniband:
        env["NCCL_IB_DISABLE"] = "1"
        where = ("the recorded box has none" if facts.source.startswith("simulated")
                 else "/sys/class/infiniband is empty")
        r["NCCL_IB_DISABLE"] = f"1: no InfiniBand device ({where})"
        if plan.nnodes > 1:
            plan.warnings.append("several nodes without InfiniBand: gradients cross Ethernet "
                                 "sockets; expect slow steps")
    else:
        r["NCCL_IB_DISABLE"] = f"unset: InfiniBand present ({', '.join(facts.infiniband[:4])})"


def plan_rows(specs: list[str], model_config: Any, seq_len: int,
              global_batch: int | None = None) -> list[dict[str, Any]]:
    """One summary row per simulated hardware spec (for docs, doctor and tests)."""
    from moai_llm.hardware.simulate import simulate

    rows = []
    for spec in specs:
        p = make_plan(simulate(spec), model_config, seq_len, global_batch)
        rows.append({
            "hardware": spec, "strategy": p.strategy, "micro_batch": p.micro_batch_size,
            "accumulation": p.gradient_accumulation_steps, "global_batch": p.global_batch,
            "checkpointing": p.gradient_checkpointing, "loss_chunk": p.loss_chunk_size,
            "peak": fmt_bytes(p.predicted_peak_bytes or 0),
            "memory": fmt_bytes(p.device_memory_bytes or 0),
            "p2p_disabled": p.env.get("NCCL_P2P_DISABLE") == "1", "fits": not any(
                w.startswith("does not fit") for w in p.warnings),
        })
    return rows
