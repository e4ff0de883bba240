"""The planner: hardware facts + model + sequence length + your choices -> `Plan`, with reasons.

    >>> from moai_llm.hardware.planner import make_plan
    >>> from moai_llm.hardware.simulate import simulate
    >>> from moai_llm.config import MoaiConfig
    >>> plan = make_plan(simulate("8xA100-80GB"), MoaiConfig.from_preset("3b"), seq_len=1024)
    >>> plan.micro_batch_size, plan.gradient_accumulation_steps
    (8, 8)
    >>> plan.reasons["strategy"]             # doctest: +ELLIPSIS
    'fsdp2: DDP without checkpointing fits micro batch 1 only (target 4), ...'

`make_plan` is the only code that decides how a run uses the machine: processes, precision,
attention backend, global batch, loss chunk, strategy and checkpointing, micro batch and
accumulation, environment. `moai doctor`, `moai pretrain --dry-run` and the run itself call it
with the same inputs; training reads the Plan and never re-derives any of it.

Each decision is one function below that returns (value, one-line reason). Your explicit
choices arrive as keyword arguments (`micro_batch_size=4`, `precision="bf16"`, ...; None means
"decide") and win; combinations that cannot hold (a global batch that micro batch x
accumulation x processes cannot make) are refused with the flag to change.

Order: processes -> precision -> attention -> global batch -> loss chunk -> (strategy,
checkpointing) -> micro batch and accumulation -> environment. Strategy and checkpointing are
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
from moai_llm.hardware.environment import decide_environment
from moai_llm.hardware.facts import HardwareFacts
from moai_llm.hardware.fit import (
    GPU_MARGIN,
    device_memory,
    estimate_for,
    max_micro_batch,
)
from moai_llm.hardware.memory import GIB, ModelShape, fmt_bytes
from moai_llm.hardware.plan import ATTENTION_FLASH, Plan

TARGET_MICRO_TOKENS = 4096  # tokens per micro batch that keep a GPU busy at 0.5-3B
CHUNK_RANGE = (256, 8192)  # fused CE chunk sizes considered (powers of two)

__all__ = ["CHOICES", "Plan", "default_global_batch", "estimate_for", "make_plan"]

# What you may decide yourself (keyword arguments of make_plan); None leaves it to the planner.
CHOICES = {
    "nnodes", "nproc_per_node", "micro_batch_size", "gradient_accumulation_steps",
    "loss_chunk_size", "gradient_checkpointing", "strategy", "precision", "compile",
}
# Compiled blocks on the CPU (benchmarks/bench_compile.py, benchmarks/results/compile.md): no
# faster with rows of 256 tokens; 0.92x a step with rows of 1024, after ~21 s of compiling and
# a few seconds more each time the documents bring a new band width: it paid after ~900 steps.
CPU_COMPILE_MIN_SEQ = 1024
CPU_COMPILE_MIN_STEPS = 2000
SET_BY_YOU = "(set by you)"


def make_plan(
    facts: HardwareFacts,
    model_config: Any,
    seq_len: int,
    global_batch: int | None = None,
    max_steps: int | None = None,
    lora: dict[str, Any] | None = None,
    **choices: Any,
) -> Plan:
    """The plan for training `model_config` at `seq_len` on `facts` (see module docstring);
    `max_steps`, the run's length, weighs compiling against the time it saves. `lora`: a LoRA
    run (training/lora.py `lora_memory_facts`): only the adapters have gradients and AdamW
    states, and where the plan computes in bf16 the frozen decoder layers are held in bf16."""
    unknown = set(choices) - CHOICES
    if unknown:
        raise MoaiInputError(f"make_plan: unknown choice(s) {sorted(unknown)}",
                             hint="choices: " + ", ".join(sorted(CHOICES)))
    if seq_len < 1:
        raise MoaiInputError(f"--seq-len {seq_len}: must be at least 1")
    choices = {k: v for k, v in choices.items() if v is not None and v != "auto"}
    shape = ModelShape.from_config(model_config)
    gpu = bool(facts.gpus) and facts.cuda_available
    plan = Plan(seq_len=seq_len, device="cuda" if gpu else "cpu",
                backend="nccl" if gpu else "gloo", hardware=facts.summary(), model=shape.summary())
    r, warnings = plan.reasons, plan.warnings
    if facts.gpus and not facts.cuda_available:
        warnings.append("NVIDIA GPUs are present but torch cannot use them (CPU build of torch "
                        "or driver problem): planning for the CPU")
    if len(facts.gpu_names) > 1:
        warnings.append(f"mixed GPU types {facts.gpu_names}: planning for the smallest memory; "
                        "the slowest GPU sets the pace")

    plan.nproc_per_node, r["nproc_per_node"] = decide_nproc(facts, gpu, choices, warnings)
    plan.nnodes, r["nnodes"] = decide_nnodes(facts, choices)
    plan.precision, r["precision"] = decide_precision(facts, gpu, choices)
    plan.tf32, tf32_reason = decide_tf32(facts, gpu)
    if tf32_reason:
        r["tf32"] = tf32_reason
    if lora is not None:
        plan.lora, r["lora"] = decide_lora(lora, plan.precision)
    plan.attention, r["attention"] = decide_attention(facts, gpu, plan.precision)
    plan.compile, r["compile"] = decide_compile(gpu, seq_len, max_steps, choices)
    target, r["global_batch"] = decide_global_batch(shape, global_batch)
    plan.device_memory_bytes = device_memory(facts, plan.nproc_per_node, gpu, warnings)
    plan.loss_chunk_size, r["loss_chunk_size"] = decide_loss_chunk(
        shape, plan.device_memory_bytes, plan.precision, gpu, choices)
    max_micro = decide_layout(plan, shape, target, choices)
    decide_batch(plan, shape, target, global_batch is not None, max_micro, choices)
    est = estimate_for(shape, plan)
    plan.predicted_peak_bytes = est.peak_reserved if gpu else est.peak_allocated
    r["memory"] = (f"predicted peak {fmt_bytes(plan.predicted_peak_bytes)} per process of "
                   f"{fmt_bytes(plan.device_memory_bytes)}")
    plan.env, env_reasons = decide_environment(plan, facts, gpu)
    r.update(env_reasons)
    return plan


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


def decide_nproc(facts: HardwareFacts, gpu: bool, choices: dict, warnings: list[str]) -> tuple[int, str]:
    if "nproc_per_node" in choices:
        n = int(choices["nproc_per_node"])
        if gpu and n > facts.gpu_count:
            warnings.append(f"{n} processes for {facts.gpu_count} GPUs: processes would share a GPU")
        return n, f"{n} {SET_BY_YOU}"
    if gpu:
        return facts.gpu_count, f"{facts.gpu_count}: one process per GPU"
    return 1, ("1 CPU process using every core: intra-op threads scale better on CPU than gloo "
               "all-reduces between processes")


def decide_nnodes(facts: HardwareFacts, choices: dict) -> tuple[int, str]:
    n = int(choices.get("nnodes") or facts.nnodes or 1)
    return n, (f"{n} nodes (from the environment/flags)" if n > 1 else "1 node")


def decide_precision(facts: HardwareFacts, gpu: bool, choices: dict) -> tuple[str, str]:
    """bf16 autocast where the GPU has bf16 tensor cores; fp32 elsewhere, CPU included, unless
    you ask for bf16 (`--precision bf16` / `--bf16`)."""
    if "precision" in choices:
        if choices["precision"] not in ("bf16", "fp32"):
            raise MoaiInputError(f"--precision {choices['precision']}: use auto, bf16 or fp32")
        return choices["precision"], f"{choices['precision']} {SET_BY_YOU}"
    cc = min((g.cc_major for g in facts.gpus), default=0)
    if gpu and cc >= 8:
        return "bf16", "bf16 autocast over fp32 weights: compute capability >= 8.0 has bf16 tensor cores"
    if gpu:
        return "fp32", "fp32: no bf16 before compute capability 8.0 (moai does not use fp16 loss scaling)"
    return "fp32", "fp32 on CPU unless you ask for bf16 (bf16 autocast is slower on most CPUs)"


def decide_lora(lora: dict[str, Any], precision: str) -> tuple[dict[str, Any], str]:
    """The frozen base's dtype: nf4 for a 4-bit base (QLoRA, `base_4bit` in the facts); else bf16
    where the run computes in bf16 (autocast would cast the weights to bf16 for every matmul
    anyway), fp32 otherwise."""
    frozen = "nf4" if lora.get("base_4bit") else "bf16" if precision == "bf16" else "fp32"
    held = {"nf4": f"decoder Linears in 4-bit NF4 with double quantisation, the rest in {precision}",
            "bf16": "decoder layers held in bf16 (embeddings, lm_head, final norm fp32)"}.get(frozen, "held in fp32")
    return {**lora, "frozen_dtype": frozen}, (
        f"rank {lora['rank']} on {', '.join(lora['targets'])}: {lora['trainable']:,} trainable parameters "
        f"(fp32 weights, gradients, AdamW), {lora['frozen']:,} frozen ({held}; no gradients or AdamW states)")


def decide_tf32(facts: HardwareFacts, gpu: bool) -> tuple[bool, str | None]:
    if not gpu:
        return False, None
    on = min(g.cc_major for g in facts.gpus) >= 8
    return on, ("on: TF32 matmuls for the fp32 parts (Ampere and newer)" if on
                else "off: TF32 needs compute capability >= 8.0")


def decide_attention(facts: HardwareFacts, gpu: bool, precision: str) -> tuple[str, str]:
    """The attention backend of the run, as the model's `attn_implementation`: the first of
    `moai_llm.modeling.attention.attention_backends` for the device (CUDA: flash-attn when
    installed and bf16 -> FlexAttention -> SDPA; CPU training: SDPA). The model is built with
    it (training/worker/model_setup.py) and the memory model counts it (`estimate_for`); this is the
    one place it is chosen."""
    from moai_llm.modeling.attention import attention_backends

    backends = attention_backends("cuda" if gpu else "cpu",
                                  flash_installed=bool(facts.flash_attn_version))
    name, why = backends[0]
    if name == ATTENTION_FLASH and precision == "bf16":
        return name, f"flash-attn {facts.flash_attn_version}: varlen kernels for packed rows, no mask"
    name, why = next((n, w) for n, w in backends if n != ATTENTION_FLASH)
    if gpu and facts.flash_attn_version:
        why += f" (flash-attn {facts.flash_attn_version} needs bf16; this run is {precision})"
    elif gpu:
        why += " (flash-attn is not installed: pip install 'moai[flash]')"
    return name, f"{name}: {why}"


def decide_compile(gpu: bool, seq_len: int, max_steps: int | None,
                   choices: dict) -> tuple[bool, str]:
    """Compile the decoder blocks (regional torch.compile, `compile_blocks`)? On GPUs, yes: the
    fused kernels are where the peers' throughput comes from (torchtitan, nanochat). On the CPU
    only where it was measured to pay: rows of 1024+ tokens and runs of 2000+ steps."""
    if "compile" in choices:
        on = bool(choices["compile"])
        return on, f"{'on' if on else 'off'} {SET_BY_YOU}"
    if gpu:
        return True, ("on: the decoder blocks are compiled once at the first step (one graph "
                      "for every layer) and fuse norms, RoPE and the MLP")
    steps = max_steps or 0
    measured = ("on the CPU a compiled step took 0.96-1.02x the time with rows of 256 tokens "
                "and 0.92x with rows of 1024, after ~21 s of compiling plus a recompilation for "
                "each new band width: ~900 steps to break even (benchmarks/results/compile.md)")
    if seq_len >= CPU_COMPILE_MIN_SEQ and steps >= CPU_COMPILE_MIN_STEPS:
        return True, f"on: {steps} steps of {seq_len} tokens; {measured}"
    return False, (f"off: {steps} steps of {seq_len} tokens (on from {CPU_COMPILE_MIN_STEPS} "
                   f"steps of {CPU_COMPILE_MIN_SEQ}+); {measured}")


def decide_global_batch(shape: ModelShape, global_batch: int | None) -> tuple[int, str]:
    if global_batch is not None:
        if global_batch < 1:
            raise MoaiInputError(f"--global-batch {global_batch}: must be at least 1")
        return int(global_batch), f"{global_batch} sequences {SET_BY_YOU}"
    return default_global_batch(shape.params)


def decide_loss_chunk(shape: ModelShape, memory: int, precision: str, gpu: bool,
                      choices: dict) -> tuple[int, str]:
    if "loss_chunk_size" in choices:
        return int(choices["loss_chunk_size"]), f"{choices['loss_chunk_size']} {SET_BY_YOU}"
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


def decide_layout(plan: Plan, shape: ModelShape, target: int, choices: dict) -> int:
    """Strategy and gradient checkpointing, together (sets both and their reasons on `plan`).
    Returns the largest micro batch that fits with them."""
    world = plan.world_size
    if world == 1:
        strategies = ["single"]
    elif plan.lora is not None:
        if choices.get("strategy") == "fsdp2":
            raise MoaiInputError("--strategy fsdp2 with --lora-rank: moai shards LoRA runs with ddp only",
                                 hint="drop --strategy (a LoRA run's trainable states are small: ddp)")
        strategies = ["ddp"]
    elif "strategy" in choices:
        if choices["strategy"] not in ("ddp", "fsdp2"):
            raise MoaiInputError(f"--strategy {choices['strategy']}: {world} processes need "
                                 "ddp or fsdp2")
        strategies = [choices["strategy"]]
    else:
        strategies = ["ddp", "fsdp2"]
    ckpts = [bool(choices["gradient_checkpointing"])] if "gradient_checkpointing" in choices \
        else [False, True]
    share = max(1, math.ceil(target / world))
    target_micro = min(share, max(1, math.ceil(TARGET_MICRO_TOKENS / plan.seq_len)))
    found: dict[tuple[str, bool], int] = {}
    for ckpt in ckpts:
        for strat in strategies:
            trial = dataclasses.replace(plan, strategy=strat, gradient_checkpointing=ckpt)
            found[(strat, ckpt)] = max_micro_batch(shape, trial, share)
    good = [k for k, m in found.items() if m >= target_micro]
    if good:
        chosen = good[0]
    elif any(found.values()):
        chosen = max(found, key=lambda k: found[k])
    else:  # nothing fits: plan the most frugal setup and say so
        chosen = list(found)[-1]
    plan.strategy, plan.gradient_checkpointing = chosen
    plan.reasons["strategy"] = _strategy_reason(plan, shape, found, target_micro, choices)
    plan.reasons["gradient_checkpointing"] = _checkpointing_reason(plan, found, target_micro,
                                                                   choices)
    return found[chosen]


def _strategy_reason(plan: Plan, shape: ModelShape, found: dict, target_micro: int,
                     choices: dict) -> str:
    replicated = fmt_bytes(20 * shape.params)
    if plan.strategy == "single":
        asked = choices.get("strategy")
        return "single process" + (f" (--strategy {asked} needs several)" if asked else "")
    if "strategy" in choices:
        return f"{plan.strategy} {SET_BY_YOU}"
    if plan.strategy == "ddp":
        return (f"ddp: replicated weights, gradients and AdamW states ({replicated} with "
                "buckets) fit; least communication")
    ckpt = plan.gradient_checkpointing
    if max(found.get(("ddp", False), 0), found.get(("ddp", True), 0)) == 0:
        why = "replicated states do not fit"
    else:
        why = (f"DDP {'with' if ckpt else 'without'} checkpointing fits micro batch "
               f"{found.get(('ddp', ckpt), 0)} only (target {target_micro}), sharded states "
               f"leave room for {found.get(('fsdp2', ckpt), 0)}")
    return (f"fsdp2: {why} (DDP needs {replicated} for weights, gradients, AdamW and buckets of "
            f"{fmt_bytes(plan.device_memory_bytes or 0)}); sharded over {plan.world_size} processes")


def _checkpointing_reason(plan: Plan, found: dict, target_micro: int, choices: dict) -> str:
    if "gradient_checkpointing" in choices:
        return f"{plan.gradient_checkpointing} {SET_BY_YOU}"
    if max(found.values()) == 0:
        return f"{plan.gradient_checkpointing}: nothing fits either way"
    off = found.get((plan.strategy, False), 0)
    if plan.gradient_checkpointing:
        return (f"on: without it only micro batch {off} fits (target {target_micro} = "
                f"~{TARGET_MICRO_TOKENS} tokens); recomputing layers costs ~1/3 more compute")
    return f"off: micro batch {off} fits without it (target {target_micro}), so no recompute cost"


def decide_batch(plan: Plan, shape: ModelShape, target: int, exact: bool, max_micro: int,
                 choices: dict) -> None:
    """Micro batch and accumulation (set on `plan` with reasons). `exact`: the global batch is
    yours, so micro x accumulation x processes must make it exactly; otherwise the default
    global batch is a target that accumulation rounds to."""
    world, r = plan.world_size, plan.reasons
    micro, accum = choices.get("micro_batch_size"), choices.get("gradient_accumulation_steps")
    if exact:
        micro, accum = _exact_batch(target, world, micro, accum, max_micro)
    else:
        if micro is None:
            micro = _pick_micro(max_micro, math.ceil(target / world), target, world)
        if accum is None:
            accum = max(1, round(target / (micro * world)))
    plan.micro_batch_size, plan.gradient_accumulation_steps = int(micro), int(accum)
    if "micro_batch_size" in choices:
        r["micro_batch_size"] = f"{micro} {SET_BY_YOU}"
        largest = max_micro_batch(shape, plan, micro) if max_micro < micro else micro  # not capped
        if largest < micro:
            plan.warnings.append(f"micro batch {micro} is predicted not to fit "
                                 f"(largest that fits: {largest})")
    elif max_micro == 0:
        est = estimate_for(shape, plan, 1)
        need = est.peak_reserved if plan.device == "cuda" else est.peak_allocated
        plan.warnings.append(
            f"does not fit: even micro batch 1 needs ~{fmt_bytes(need)} per process, "
            f"{fmt_bytes(plan.device_memory_bytes or 0)} available; use more GPUs (FSDP2 shards "
            "the states), a shorter --seq-len or a smaller model")
        r["micro_batch_size"] = "1: nothing larger can fit (see warnings)"
    else:
        where = (f"with {int(GPU_MARGIN * 100)}% margin (max {max_micro})" if plan.device == "cuda"
                 else "in this process's RAM share")
        r["micro_batch_size"] = (f"{micro}: largest that fits {where} and divides the "
                                 f"{math.ceil(target / world)} sequences per process")
    if "gradient_accumulation_steps" in choices:
        r["gradient_accumulation_steps"] = f"{accum} {SET_BY_YOU}"
    else:
        note = "" if plan.global_batch == target else f" (nearest to the target {target})"
        r["gradient_accumulation_steps"] = (f"{accum}: {micro} x {accum} x {world} processes = "
                                            f"global batch {plan.global_batch}{note}")


def _exact_batch(global_batch: int, world: int, micro: int | None, accum: int | None,
                 max_micro: int) -> tuple[int, int]:
    """(micro, accumulation) that make `global_batch` exactly, or MoaiInputError naming the
    flags. Any two of --batch-size, --gradient-accumulation-steps, --global-batch fix the third."""
    if global_batch % world:
        raise MoaiInputError(f"--global-batch {global_batch} is not a multiple of {world} processes")
    per_process = global_batch // world
    if micro is not None and accum is not None:
        if micro * accum != per_process:
            raise MoaiInputError(
                f"--global-batch {global_batch} ≠ micro batch {micro} × accumulation {accum} × "
                f"{world} processes",
                hint="give two of --batch-size, --gradient-accumulation-steps, --global-batch, "
                     "not all three")
        return micro, accum
    if micro is not None:
        if per_process % micro:
            raise MoaiInputError(f"--global-batch {global_batch} is not a multiple of micro batch "
                                 f"{micro} × {world} processes")
        return micro, per_process // micro
    if accum is not None:
        if per_process % accum:
            raise MoaiInputError(f"--global-batch {global_batch} is not a multiple of "
                                 f"accumulation {accum} × {world} processes")
        return per_process // accum, accum
    micro = max(m for m in range(1, max(1, max_micro) + 1) if per_process % m == 0)
    return micro, per_process // micro


def _pick_micro(max_micro: int, share: int, global_batch: int, world: int) -> int:
    """Largest micro batch <= max_micro that divides the per-process share exactly, unless that
    would more than halve it (then max_micro, and accumulation rounds the global batch)."""
    if max_micro <= 1:
        return 1
    best = max(m for m in range(1, max_micro + 1) if share % m == 0)
    if global_batch % world == 0 and best * 2 > max_micro:
        return best
    return max_micro
