"""Hardware facts as plain, serialisable dataclasses (what probe() and simulate() return).

Facts are data, not decisions: `planner.make_plan` and `moai doctor` read them. They round-trip
through `to_dict` / `from_dict`, so a machine's facts can be saved (`moai doctor --json`) and
planned for elsewhere.

    >>> from moai_llm.hardware.facts import GPUFacts, HardwareFacts
    >>> f = HardwareFacts(gpus=[GPUFacts(0, "NVIDIA A40", 46068, 46068, "8.6")])
    >>> HardwareFacts.from_dict(f.to_dict()).gpus[0].memory_total_bytes
    48305799168
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MIB = 1024**2
GIB = 1024**3

# Values of the pairwise link matrix (`HardwareFacts.p2p`).
P2P_NVLINK, P2P_PCIE, P2P_NONE, P2P_SELF = "nvlink", "pcie", "none", "self"


@dataclass
class GPUFacts:
    index: int
    name: str  # as NVML reports it, e.g. "NVIDIA A100-SXM4-80GB"
    memory_total_mib: int  # NVML memory.total in MiB
    memory_free_mib: int | None = None  # NVML memory.free (None when simulated/unknown)
    compute_capability: str = ""  # "8.0"
    power_limit_w: float | None = None  # enforced power limit
    pcie_gen: int | None = None  # max PCIe link generation
    pcie_width: int | None = None  # max PCIe link width
    nvlink_links: int = 0  # active NVLink links
    pci_bus_id: str | None = None

    @property
    def memory_total_bytes(self) -> int:
        return self.memory_total_mib * MIB

    @property
    def cc_major(self) -> int:
        try:
            return int(self.compute_capability.split(".")[0])
        except ValueError:
            return 0


@dataclass
class HardwareFacts:
    gpus: list[GPUFacts] = field(default_factory=list)
    # p2p[i][j]: "nvlink" | "pcie" | "none" | "self" (nvmlDeviceGetP2PStatus between GPU pairs)
    p2p: list[list[str]] = field(default_factory=list)
    driver_version: str | None = None  # NVIDIA driver, e.g. "550.54.15"
    driver_cuda_version: str | None = None  # highest CUDA the driver supports, e.g. "12.4"
    torch_version: str | None = None
    torch_cuda_version: str | None = None  # CUDA torch was built with (None: CPU build)
    cuda_available: bool = False  # torch.cuda.is_available()
    torch_arch_list: list[str] = field(default_factory=list)  # torch.cuda.get_arch_list()
    nccl_version: str | None = None
    flash_attn_version: str | None = None  # None: not installed
    cpu_cores: int = 1  # cores this process may use (affinity)
    cpu_model: str = ""
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    output_dir: str | None = None
    disk_free_bytes: int | None = None  # free bytes on the output folder's file system
    infiniband: list[str] = field(default_factory=list)  # RDMA devices with an InfiniBand port
    # The other devices of /sys/class/infiniband: name -> "roce" (Ethernet link layer), "efa"
    # (AWS Elastic Fabric Adapter, not InfiniBand) or "other".
    rdma: dict[str, str] = field(default_factory=dict)
    nnodes: int = 1  # from NNODES / SLURM_NNODES / WORLD_SIZE÷LOCAL_WORLD_SIZE
    node_rank: int = 0  # from NODE_RANK / GROUP_RANK / SLURM_NODEID
    hostname: str = ""
    source: str = "probe"  # "probe" or "simulated: <spec> (recorded facts, <file>)"
    notes: list[str] = field(default_factory=list)  # why something could not be read

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpu_names(self) -> list[str]:
        return sorted({g.name for g in self.gpus})

    @property
    def min_gpu_memory_bytes(self) -> int:
        return min((g.memory_total_bytes for g in self.gpus), default=0)

    def p2p_pairs(self) -> dict[str, int]:
        """Counts of GPU pairs (i<j) per link kind: {"nvlink": 28, "pcie": 0, "none": 0}."""
        counts = {P2P_NVLINK: 0, P2P_PCIE: 0, P2P_NONE: 0}
        for i, row in enumerate(self.p2p):
            for j in range(i + 1, len(row)):
                counts[row[j]] = counts.get(row[j], 0) + 1
        return counts

    def summary(self) -> str:
        """One line: "8x NVIDIA A100-SXM4-80GB (80.0 GiB, cc 8.0), NVLink all pairs"."""
        if not self.gpus:
            return f"no GPU; {self.cpu_cores} CPU cores, {self.ram_total_bytes / GIB:.0f} GiB RAM"
        names = ", ".join(
            f"{sum(g.name == n for g in self.gpus)}x {n}" for n in self.gpu_names
        )
        g = self.gpus[0]
        pairs = self.p2p_pairs()
        total = sum(pairs.values())
        if total == 0:
            link = "single GPU"
        elif pairs[P2P_NVLINK] == total:
            link = "NVLink all pairs"
        elif pairs[P2P_NONE] == total:
            link = "no P2P"
        else:
            link = ", ".join(f"{k} {v}/{total} pairs" for k, v in pairs.items() if v)
        nodes = f" x {self.nnodes} nodes" if self.nnodes > 1 else ""
        return f"{names} ({g.memory_total_bytes / GIB:.1f} GiB, cc {g.compute_capability}), {link}{nodes}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareFacts:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        gpu_names = {f.name for f in dataclasses.fields(GPUFacts)}
        kw["gpus"] = [
            GPUFacts(**{k: v for k, v in g.items() if k in gpu_names}) for g in data.get("gpus", [])
        ]
        return cls(**kw)
