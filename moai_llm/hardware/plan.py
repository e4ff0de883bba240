"""The run plan: what `planner.make_plan` decided (processes, batch, checkpointing, strategy,
attention, env) and why.

A `Plan` is plain data so it can be printed by `moai doctor` and `--dry-run`, saved in
`run.yaml` (the only way it reaches training processes) and halved after a first-step OOM.

    >>> p = Plan(seq_len=1024, micro_batch_size=12, gradient_accumulation_steps=4, nproc_per_node=8)
    >>> p.global_batch, p.halved().micro_batch_size, p.halved().gradient_accumulation_steps
    (384, 6, 8)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Attention backends a plan can choose, by the model's `attn_implementation` names, so the
# model is built with exactly what the plan (and its memory estimate) assumed.
ATTENTION_SDPA = "sdpa"
ATTENTION_FLASH = "flash_attention_2"
ATTENTION_FLEX = "flex_attention"


@dataclass(kw_only=True)
class Plan:
    """What make_plan decided. Values after `seq_len` are those of a bare plan (one process,
    micro batch 1); make_plan sets every one of them, with a reason in `reasons`."""

    seq_len: int  # tokens per sequence: the plan is made for it (the run's setting, not a default)
    nnodes: int = 1  # machines taking part
    nproc_per_node: int = 1  # processes per machine (one per GPU, or CPU workers)
    micro_batch_size: int = 1  # sequences per process per forward/backward
    gradient_accumulation_steps: int = 1  # micro steps per optimizer step
    loss_chunk_size: int = 4096  # tokens per chunk of the fused linear cross-entropy
    gradient_checkpointing: bool = False  # recompute layer activations in backward
    strategy: str = "single"  # "single" | "ddp" | "fsdp2"
    precision: str = "fp32"  # "bf16" (autocast over fp32 masters) | "fp32"
    env: dict[str, str] = field(default_factory=dict)  # environment set before launch
    reasons: dict[str, str] = field(default_factory=dict)  # decision -> one-line reason
    device: str = "cpu"  # "cuda" | "cpu"
    backend: str = "gloo"  # torch.distributed backend: "nccl" | "gloo"
    tf32: bool = False  # allow TF32 matmuls (Ampere and newer)
    attention: str = ATTENTION_SDPA  # the model's attn_implementation: "sdpa" | "flex_attention" | "flash_attention_2"
    compile: bool = False  # compile the decoder blocks (moai_llm.modeling.compile_blocks)
    dist_timeout_s: int = 1800  # init_process_group(timeout=...): collectives waiting on a save
    predicted_peak_bytes: int | None = None  # memory model's peak per process at this plan
    device_memory_bytes: int | None = None  # usable memory per process (GPU total or RAM share)
    lora: dict[str, Any] | None = None  # LoRA runs: trainable/frozen parameters, adapter activations, frozen dtype
    hardware: str = ""  # one-line summary of the facts the plan was made from
    model: str = ""  # one-line summary of the model
    warnings: list[str] = field(default_factory=list)  # things the user should know

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step over all processes."""
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for run.yaml, --json); includes the derived global batch."""
        d = dataclasses.asdict(self)
        d["world_size"] = self.world_size
        d["global_batch"] = self.global_batch
        d["tokens_per_step"] = self.tokens_per_step
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Inverse of `to_dict` (derived keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def halved(self) -> Plan:
        """The plan after a first-step OOM: micro batch halved, accumulation doubled.

        The global batch is unchanged. An odd micro batch is divided by its smallest prime
        factor instead (3 -> 1 with x3 accumulation) so the global batch still holds.
        Raises ValueError when the micro batch is already 1.
        """
        m = self.micro_batch_size
        if m <= 1:
            raise ValueError("micro batch is already 1; nothing left to halve")
        p = next(d for d in range(2, m + 1) if m % d == 0)
        new = dataclasses.replace(
            self,
            micro_batch_size=m // p,
            gradient_accumulation_steps=self.gradient_accumulation_steps * p,
            env=dict(self.env),
            reasons=dict(self.reasons),
            warnings=list(self.warnings),
            predicted_peak_bytes=None,
        )
        new.reasons["micro_batch_size"] = (
            f"{m // p} after an out-of-memory error at the first step with {m} "
            f"(accumulation x{p} keeps the global batch at {self.global_batch})"
        )
        return new
