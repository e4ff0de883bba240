"""Processes of a run: rank and device, the process group the plan asks for, DDP or FSDP2
wrapping, and full (gathered) states for checkpoints.

- One process: no process group, the model as it is.
- Several: `init_process_group` with the plan's backend (nccl on GPUs, gloo on CPU) and
  timeout (ranks wait in a collective while rank 0 writes a checkpoint); DDP, or FSDP2
  (`fully_shard` per decoder layer, then the root) when the plan says so.

    >>> from moai_llm.hardware.plan import Plan
    >>> dist = DistInfo(Plan(seq_len=64))      # outside torchrun: rank 0 of 1, on the CPU
    >>> dist.rank, dist.world, dist.device.type, dist.all_sum([1.0, 2.0])
    (0, 1, 'cpu', [1.0, 2.0])
"""

from __future__ import annotations

import datetime
import os

import torch

from moai_llm.hardware.plan import Plan


class DistInfo:
    """Rank, world size and device of this process (initialises torch.distributed if needed)."""

    def __init__(self, plan: Plan):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and plan.device == "cuda"
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend=plan.backend if use_cuda else "gloo", device_id=self.device if use_cuda else None,
                timeout=datetime.timedelta(seconds=plan.dist_timeout_s))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def wrap_distributed(model: torch.nn.Module, plan: Plan, dist: DistInfo) -> torch.nn.Module:
    """DDP or FSDP2 for several processes; the model itself for one."""
    if dist.world <= 1:
        return model
    if plan.strategy == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = None
        if plan.precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kwargs = {"mp_policy": mp} if mp is not None else {}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
        for layer in base.model.layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def _sharded(plan: Plan) -> bool:
    return plan.strategy == "fsdp2" and torch.distributed.is_initialized()


def optimizer_state_for_save(wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, plan: Plan) -> dict:
    """Optimizer state as a plain dict (FSDP2: gathered to full tensors on CPU; collective)."""
    if _sharded(plan):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(unwrap(wrapped), optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                         plan: Plan) -> None:
    if _sharded(plan):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(unwrap(wrapped), optimizer, state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        return
    optimizer.load_state_dict(state)


def full_model_state(wrapped: torch.nn.Module, plan: Plan) -> dict[str, torch.Tensor] | None:
    """FSDP2: the gathered full weights on CPU (collective); otherwise None (save the module)."""
    if not _sharded(plan):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(wrapped), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
