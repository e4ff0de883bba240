"""Facts of hardware we do not have, built from recorded NVML facts in presets/hardware/*.yaml.

    >>> from moai_llm.hardware.simulate import simulate, list_hardware
    >>> f = simulate("8xA40-48GB")
    >>> f.p2p[0][1], f.p2p[0][7]          # one socket vs across sockets
    ('pcie', 'none')
    >>> simulate("2x8xH100-80GB").nnodes
    2

Spec: `[NODESx]COUNTxNAME`. NAME is a preset file stem or alias, case-insensitive.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.hardware.facts import P2P_SELF, GPUFacts, HardwareFacts

GIB = 1024**3
_SPEC = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?(\d+)\s*[xX*]\s*([A-Za-z0-9._-]+)\s*$")


def hardware_dir() -> Path:
    from moai_llm.paths import PRESETS_DIR

    return PRESETS_DIR / "hardware"


@lru_cache(maxsize=1)
def _records() -> dict[str, dict[str, Any]]:
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for path in sorted(hardware_dir().glob("*.yaml")):
        record = yaml.safe_load(path.read_text())
        record["_file"] = f"presets/hardware/{path.name}"
        out[path.stem] = record
    return out


def list_hardware() -> list[str]:
    """Names usable in `--simulate COUNTxNAME`: ["A100-40GB", "A100-80GB", ...]."""
    return sorted(_records())


def hardware_record(name: str) -> dict[str, Any]:
    """The recorded facts of one GPU model by file stem or alias (case-insensitive)."""
    key = name.strip().lower()
    for stem, record in _records().items():
        names = [stem, record.get("name", ""), *record.get("aliases", [])]
        if key in {str(n).lower() for n in names}:
            return record
    raise MoaiInputError(
        f"--simulate: unknown GPU '{name}'",
        hint="known: " + ", ".join(list_hardware()) + " (e.g. --simulate 8xA100-80GB)",
    )


def peak_flops(gpu_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of the GPU that NVML (or torch.cuda.get_device_name) calls `gpu_name`,
    at `precision` ("bf16", "tf32" or "fp32"), from its record's `peak_tflops`: the one table
    MFU is measured against. The name must match a record's exactly (PCIe and SXM boards, or
    a GeForce and its "D" variant, differ); None for a GPU without a record, and for CPUs.

    >>> peak_flops("NVIDIA H100 PCIe", "bf16") / 1e12, peak_flops("NVIDIA H100 80GB HBM3", "bf16") / 1e12
    (756.5, 989.4)
    >>> peak_flops("NVIDIA GeForce RTX 4090 D", "bf16") is None, peak_flops("cpu", "fp32") is None
    (True, True)
    """
    for record in _records().values():
        if record.get("gpu", {}).get("name") == gpu_name:
            value = (record.get("peak_tflops") or {}).get(precision)
            return float(value) * 1e12 if value else None
    return None


def parse_spec(spec: str) -> tuple[int, int, str]:
    """"8xA100-80GB" -> (nnodes=1, count=8, "A100-80GB"); "2x8xH100-80GB" -> (2, 8, ...)."""
    m = _SPEC.match(spec or "")
    if not m:
        raise MoaiInputError(
            f"--simulate '{spec}': expected COUNTxNAME or NODESxCOUNTxNAME",
            hint="e.g. --simulate 8xA100-80GB, 4xRTX4090-24GB, 2x8xH100-80GB",
        )
    nnodes, count = int(m.group(1) or 1), int(m.group(2))
    if count < 1 or nnodes < 1:
        raise MoaiInputError(f"--simulate '{spec}': counts must be at least 1")
    return nnodes, count, m.group(3)


def topology_for(record: dict[str, Any], count: int) -> dict[str, Any]:
    topo = record.get("topology", {})
    boxes = {int(k): v for k, v in (topo.get("boxes") or {}).items()}
    return boxes.get(count) or topo.get("default") or {"p2p": "none"}


def p2p_matrix(box: dict[str, Any], count: int) -> list[list[str]]:
    """Pairwise links of a box: `p2p` inside each group, `across_groups` between groups."""
    groups = box.get("groups") or [list(range(count))]
    group_of = {gpu: gi for gi, group in enumerate(groups) for gpu in group}
    inside, across = box.get("p2p", "none"), box.get("across_groups", box.get("p2p", "none"))
    return [
        [
            P2P_SELF if i == j else inside if group_of.get(i, -1) == group_of.get(j, -2) else across
            for j in range(count)
        ]
        for i in range(count)
    ]


def simulate(spec: str, output_dir: str | None = None) -> HardwareFacts:
    """Facts for `spec` ("8xA100-80GB") from the recorded presets: GPUs, topology, host, software.

    The torch version is this machine's (the plan is made for the installed moai); CUDA, NCCL
    and driver come from the record's typical stack. flash-attn is recorded as not installed.
    """
    import torch

    nnodes, count, name = parse_spec(spec)
    record = hardware_record(name)
    g, host, sw = record["gpu"], record.get("host", {}), record.get("software", {})
    box = topology_for(record, count)
    gpus = [
        GPUFacts(
            index=i,
            name=g["name"],
            memory_total_mib=int(g["memory_total_mib"]),
            memory_free_mib=int(g["memory_total_mib"]),
            compute_capability=str(g["compute_capability"]),
            power_limit_w=g.get("power_limit_w"),
            pcie_gen=g.get("pcie_gen"),
            pcie_width=g.get("pcie_width"),
            nvlink_links=int(g.get("nvlink_links", 0)) if box.get("p2p") == "nvlink" or count == 1 else 0,
        )
        for i in range(count)
    ]
    ram = int(host.get("ram_gib_per_gpu", 64) * count * GIB)
    return HardwareFacts(
        gpus=gpus,
        p2p=p2p_matrix(box, count),
        driver_version=sw.get("driver_version"),
        driver_cuda_version=sw.get("driver_cuda_version"),
        torch_version=torch.__version__.split("+")[0],
        torch_cuda_version=sw.get("torch_cuda_version"),
        cuda_available=True,
        nccl_version=sw.get("nccl_version"),
        flash_attn_version=None,
        cpu_cores=int(host.get("cpu_cores_per_gpu", 8) * count),
        cpu_model="(simulated)",
        ram_total_bytes=ram,
        ram_available_bytes=ram,
        output_dir=output_dir,
        disk_free_bytes=int(host.get("disk_free_gib", 1000) * GIB),
        infiniband=list(host.get("infiniband") or []),
        rdma=dict(host.get("rdma") or {}),
        nnodes=nnodes,
        node_rank=0,
        hostname="simulated",
        source=f"simulated {spec} (recorded facts, {record['_file']})",
        notes=[box.get("note", "")] + [f"uncertain: {u}" for u in record.get("uncertain") or []],
    )
