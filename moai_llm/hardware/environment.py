"""The environment a plan sets before launch (allocator, threads, NCCL), each with its reason.

One decision of the planner (`planner.make_plan` calls it last, when processes, precision and
strategy are known). Variables are set only where the facts call for them: `NCCL_P2P_DISABLE`
when NVML reports no P2P between any GPU pair (not because of a GPU's name),
`NCCL_IB_DISABLE` when there is neither an InfiniBand nor a RoCE port.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.planner import make_plan
    >>> from moai_llm.hardware.simulate import simulate
    >>> plan = make_plan(simulate("4xRTX4090-24GB"), MoaiConfig.from_preset("0.5b"), seq_len=1024)
    >>> plan.env["NCCL_P2P_DISABLE"], plan.reasons["NCCL_P2P_DISABLE"][:44]
    ('1', '1: NVML reports no P2P between any GPU pair;')
"""

from __future__ import annotations

from moai_llm.hardware.facts import P2P_NONE, HardwareFacts
from moai_llm.hardware.plan import Plan

NCCL_HEARTBEAT_S = "1800"  # checkpoint saves and first-step compiles can exceed the 480 s default


def decide_environment(plan: Plan, facts: HardwareFacts, gpu: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(variables to set, variable or decision -> reason) for `plan` on `facts`."""
    env: dict[str, str] = {}
    r: dict[str, str] = {}
    if not gpu:
        threads = max(1, facts.cpu_cores // plan.nproc_per_node)
        env["OMP_NUM_THREADS"] = str(threads)
        r["OMP_NUM_THREADS"] = (f"{threads}: {facts.cpu_cores} cores / {plan.nproc_per_node} "
                                "processes (torchrun would set 1)")
        r["backend"] = "gloo: the CPU backend of torch.distributed"
        return env, r
    env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    r["PYTORCH_CUDA_ALLOC_CONF"] = ("expandable_segments: less fragmentation when batch shapes "
                                    "vary; the memory model assumes ~5% allocator slack")
    if plan.tf32:
        env["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = "1"
    if plan.world_size == 1:
        return env, r
    r["backend"] = "nccl: GPU collectives"
    r["dist_timeout_s"] = (f"{plan.dist_timeout_s}: init_process_group timeout; ranks wait in a "
                           "collective while rank 0 writes a checkpoint (default 600 s)")
    env["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] = NCCL_HEARTBEAT_S
    r["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"] = (f"{NCCL_HEARTBEAT_S}: rank 0 saving a checkpoint "
                                             "must not look like a hang (default 480 s)")
    _p2p(plan, facts, env, r)
    _infiniband(plan, facts, env, r)
    return env, r


def _p2p(plan: Plan, facts: HardwareFacts, env: dict[str, str], r: dict[str, str]) -> None:
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


def _infiniband(plan: Plan, facts: HardwareFacts, env: dict[str, str], r: dict[str, str]) -> None:
    """NCCL's IB transport serves InfiniBand and RoCE ports alike; without either it is off."""
    roce = sorted(name for name, kind in facts.rdma.items() if kind == "roce")
    if facts.infiniband:
        r["NCCL_IB_DISABLE"] = f"unset: InfiniBand present ({', '.join(facts.infiniband[:4])})"
        return
    if roce:
        r["NCCL_IB_DISABLE"] = (f"unset: RoCE device(s) {', '.join(roce[:4])}; NCCL's IB transport "
                                "uses them")
        return
    env["NCCL_IB_DISABLE"] = "1"
    where = ("the recorded box has none" if facts.source.startswith("simulated")
             else "/sys/class/infiniband has no InfiniBand or RoCE port")
    efa = sorted(name for name, kind in facts.rdma.items() if kind == "efa")
    also = f"; EFA ({', '.join(efa[:2])}) is reached through the aws-ofi-nccl plugin" if efa else ""
    r["NCCL_IB_DISABLE"] = f"1: no InfiniBand device ({where}){also}"
    if plan.nnodes > 1 and not efa:
        plan.warnings.append("several nodes without InfiniBand: gradients cross Ethernet "
                             "sockets; expect slow steps")
