"""Pass / warn / fail checks of a machine (facts) and a plan, each with a fix; `moai doctor`
renders them.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.checks import run_checks
    >>> from moai_llm.hardware.planner import make_plan
    >>> from moai_llm.hardware.simulate import simulate
    >>> facts = simulate("4xRTX4090-24GB")
    >>> plan = make_plan(facts, MoaiConfig.from_preset("2b"), seq_len=1024)
    >>> {c.name: c.status for c in run_checks(facts, plan, params=2_013_018_880)}  # doctest: +ELLIPSIS
    {'gpu': 'pass', 'driver': 'pass', ..., 'p2p': 'warn', ..., 'plan-fits': 'pass'}

A failure means training will not work as planned (driver too old for torch's CUDA, the model
does not fit, no disk for one checkpoint); a warning means it works, slower or at a risk (no
GPU, no flash-attn, GPU pairs without P2P, mixed GPUs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moai_llm.hardware.facts import P2P_NONE, HardwareFacts
from moai_llm.hardware.memory import fmt_bytes
from moai_llm.hardware.plan import Plan

PASS, WARN, FAIL = "pass", "warn", "fail"

# Minimum Linux driver per CUDA toolkit (NVIDIA's CUDA release notes, table 3).
MIN_DRIVER = {
    (11, 8): "520.61.05", (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03",
    (12, 3): "545.23.06", (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03",
    (12, 8): "570.26", (12, 9): "575.51.03", (13, 0): "580.65.06",
}


@dataclass
class Check:
    name: str
    status: str  # "pass" | "warn" | "fail"
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _version(text: str | None) -> tuple[int, ...]:
    out = []
    for part in (text or "").split("+")[0].split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def _gpu_checks(facts: HardwareFacts) -> list[Check]:
    checks = []
    if not facts.gpus:
        why = "; ".join(facts.notes[:1]) or "NVML found no GPU"
        checks.append(Check("gpu", WARN, f"no NVIDIA GPU ({why}): moai plans a CPU run (slow, "
                            "fine for tiny models and tests)",
                            "run on a machine with an NVIDIA GPU and driver for real training"))
        return checks
    checks.append(Check("gpu", PASS, facts.summary()))
    if not facts.cuda_available:
        checks.append(Check("torch-cuda", FAIL, f"torch {facts.torch_version} cannot use the GPUs "
                            f"(built for CUDA {facts.torch_cuda_version or 'none: CPU build'})",
                            "install a CUDA build: pip install torch --index-url "
                            "https://download.pytorch.org/whl/cu124"))
    drv, tc = _version(facts.driver_cuda_version), _version(facts.torch_cuda_version)
    if drv and tc:
        need = MIN_DRIVER.get(tc[:2], "a newer one")
        if drv[:1] < tc[:1]:
            checks.append(Check("driver", FAIL, f"driver {facts.driver_version} supports CUDA "
                                f"{facts.driver_cuda_version}, torch needs CUDA {facts.torch_cuda_version}",
                                f"update the NVIDIA driver to >= {need}, or install torch for "
                                f"CUDA {facts.driver_cuda_version}"))
        elif drv[:2] < tc[:2]:
            checks.append(Check("driver", WARN, f"driver {facts.driver_version} (CUDA "
                                f"{facts.driver_cuda_version}) is older than torch's CUDA "
                                f"{facts.torch_cuda_version}: runs by minor-version "
                                "compatibility, PTX JIT kernels may fail",
                                f"update the NVIDIA driver to >= {need}"))
        else:
            checks.append(Check("driver", PASS, f"driver {facts.driver_version} supports CUDA "
                                f"{facts.driver_cuda_version} >= torch's {facts.torch_cuda_version}"))
    cc = max(g.cc_major for g in facts.gpus)
    if cc >= 12 and tc and tc < (12, 8):
        checks.append(Check("arch", FAIL, f"compute capability {facts.gpus[0].compute_capability} "
                            f"(Blackwell) needs torch built for CUDA >= 12.8, got {facts.torch_cuda_version}",
                            "pip install torch --index-url https://download.pytorch.org/whl/cu128"))
    missing = _unsupported_archs(facts)
    if missing:
        checks.append(Check("arch", FAIL, f"torch {facts.torch_version} has no kernels for compute "
                            f"capability {', '.join(missing)} (built for {' '.join(facts.torch_arch_list)})",
                            "install a torch build that lists that architecture (newer CUDA "
                            "wheels from https://download.pytorch.org/whl/)"))
    if min(g.cc_major for g in facts.gpus) < 8:
        checks.append(Check("bf16", WARN, "a GPU below compute capability 8.0: no bf16, training "
                            "runs in fp32 (2x memory for activations, slower)",
                            "use Ampere or newer GPUs (A100, A40, RTX 30/40/50, H100)"))
    if facts.flash_attn_version:
        checks.append(Check("flash-attn", PASS, f"flash-attn {facts.flash_attn_version}"))
    else:
        checks.append(Check("flash-attn", WARN, "flash-attn not installed: attention uses "
                            "PyTorch SDPA (correct, somewhat slower on packed rows)",
                            "pip install flash-attn --no-build-isolation  (or: pip install moai[flash])"))
    if len(facts.gpu_names) > 1:
        checks.append(Check("mixed-gpus", WARN, f"mixed GPU types {facts.gpu_names}: the plan uses "
                            "the smallest memory and the slowest GPU sets the pace",
                            "set CUDA_VISIBLE_DEVICES to GPUs of one type"))
    busy = [g.index for g in facts.gpus if g.memory_free_mib is not None
            and g.memory_free_mib < 0.9 * g.memory_total_mib]
    if busy:
        checks.append(Check("gpu-in-use", WARN, f"GPU(s) {busy} have memory in use by other "
                            "processes", "stop them (nvidia-smi shows which) or exclude those GPUs"))
    pairs = facts.p2p_pairs()
    total = sum(pairs.values())
    if total and pairs[P2P_NONE]:
        checks.append(Check("p2p", WARN, f"{pairs[P2P_NONE]} of {total} GPU pairs have no P2P: "
                            "their all-reduce traffic goes through host memory",
                            "expected on GeForce cards and across CPU sockets; NVLink/NVSwitch "
                            "boxes avoid it; the plan sets NCCL_P2P_DISABLE only if no pair has P2P"))
    elif total:
        kind = "NVLink" if pairs["nvlink"] == total else "PCIe/NVLink"
        checks.append(Check("p2p", PASS, f"P2P between all {total} GPU pairs ({kind})"))
    if facts.gpu_count > 1 and facts.cuda_available and not facts.nccl_version:
        checks.append(Check("nccl", WARN, "NCCL version unknown: multi-GPU runs need NCCL",
                            "install a CUDA build of torch (it ships NCCL)"))
    return checks


def _unsupported_archs(facts: HardwareFacts) -> list[str]:
    """Compute capabilities of the GPUs that torch's compiled kernels cannot run: an sm_XY
    binary runs on X.Y and newer minors of major X; compute_XY (PTX) JIT-compiles for >= X.Y."""
    if not facts.torch_arch_list:
        return []
    missing = []
    for cc in sorted({g.compute_capability for g in facts.gpus if g.compute_capability}):
        major, minor = (int(x) for x in cc.split(".")[:2])
        ok = False
        for arch in facts.torch_arch_list:
            kind, _, num = arch.partition("_")
            if not num.isdigit() or len(num) < 2:
                continue
            a_major, a_minor = int(num[:-1]), int(num[-1])
            if kind == "sm" and a_major == major and a_minor <= minor:
                ok = True
            if kind == "compute" and (a_major, a_minor) <= (major, minor):
                ok = True
        if not ok:
            missing.append(cc)
    return missing


def run_checks(facts: HardwareFacts, plan: Plan | None = None, params: int | None = None,
               keep_checkpoints: int = 1) -> list[Check]:
    """All checks for these facts, and for `plan` of a model with `params` parameters whose
    run keeps `keep_checkpoints` checkpoints (the run's --save-total-limit)."""
    checks = _gpu_checks(facts)
    if facts.nnodes > 1 and not facts.infiniband and not facts.rdma:
        checks.append(Check("network", WARN, f"{facts.nnodes} nodes and no InfiniBand: gradients "
                            "cross Ethernet", "use InfiniBand/RoCE between nodes or fewer nodes"))
    if params and facts.disk_free_bytes is not None:
        checks.append(disk_for_run(facts.disk_free_bytes, checkpoint_bytes(params), keep_checkpoints,
                                   facts.output_dir or "the output folder"))
    if params and facts.ram_total_bytes:
        procs = plan.nproc_per_node if plan else max(1, facts.gpu_count)
        need = int(procs * 4 * params * 1.2)  # every process builds the fp32 model before sharding
        if facts.ram_total_bytes < need:
            checks.append(Check("ram", WARN, f"{fmt_bytes(facts.ram_total_bytes)} RAM; {procs} "
                                f"processes building the model need ~{fmt_bytes(need)}",
                                "fewer processes per node or more RAM"))
    if plan is not None:
        checks.extend(_plan_checks(plan))
    return checks


def _plan_checks(plan: Plan) -> list[Check]:
    out = []
    peak = fmt_bytes(plan.predicted_peak_bytes or 0)
    mem = fmt_bytes(plan.device_memory_bytes or 0)
    misfit = [w for w in plan.warnings if w.startswith("does not fit") or "not to fit" in w]
    if misfit:
        out.append(Check("plan-fits", FAIL, misfit[0],
                         "more GPUs, a shorter --seq-len, or a smaller --model"))
    else:
        out.append(Check("plan-fits", PASS, f"predicted peak {peak} per process of {mem} "
                         f"({plan.strategy}, micro batch {plan.micro_batch_size})"))
    return out


def checkpoint_bytes(params: int, trainable: int | None = None,
                     tokenizer_dir: str | None = None) -> dict[str, int]:
    """Bytes on disk of one checkpoint and of final_model/: fp32 weights (4 B a parameter),
    AdamW's two fp32 moments (8 B a trainable parameter) in the checkpoint, the tokenizer's
    files in both, and 256 KiB for configs, RNG and scheduler states.

    >>> sizes = checkpoint_bytes(1_000_000)
    >>> round(sizes["checkpoint"] / 1e6, 1), round(sizes["final_model"] / 1e6, 1)
    (12.3, 4.3)
    """
    import os

    trainable = params if trainable is None else trainable
    tokenizer = 0
    if tokenizer_dir and os.path.isdir(tokenizer_dir):
        tokenizer = sum(e.stat().st_size for e in os.scandir(tokenizer_dir) if e.is_file())
    small = 2**18 + tokenizer
    return {"checkpoint": 4 * params + 8 * trainable + small, "final_model": 4 * params + small}


def disk_for_run(free: int, sizes: dict[str, int], keep: int, where: str, existing: int = 0) -> Check:
    """Free space against a run's checkpoints: `keep` kept + the one being written + final_model
    (less the `existing` checkpoints already on the disk, which the kept ones replace).
    Fail when they do not all fit: a run that would fill the disk half-way is refused before it
    starts, not found out at its last checkpoint.

    >>> sizes = {"checkpoint": 12 * 2**30, "final_model": 4 * 2**30}
    >>> [disk_for_run(free * 2**30, sizes, keep=2, where="out").status for free in (8, 39, 40)]
    ['fail', 'fail', 'pass']
    """
    from moai_llm.resources import human_bytes as size

    one, final = sizes["checkpoint"], sizes["final_model"]
    need = (keep + 1 - min(existing, keep)) * one + final
    if free < one:
        return Check("disk", FAIL, f"{where}: one checkpoint needs about {size(one)} but only "
                     f"{size(free)} is free", "free space on that disk, or choose another --output-dir")
    if free < need:
        return Check("disk", FAIL, f"{where}: {size(free)} free; {keep} kept checkpoint{'s' * (keep != 1)} + the one "
                     f"being written ({size(one)} each) + final_model ({size(final)}) need {size(need)}",
                     "free space, lower --save-total-limit, or choose another --output-dir")
    return Check("disk", PASS, f"{where}: {size(free)} free; checkpoints and final model need {size(need)}")


def worst(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS
