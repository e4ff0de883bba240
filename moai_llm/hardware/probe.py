"""Probe this machine (NVML, torch, OS) into `HardwareFacts`; or simulate recorded hardware.

    >>> import tempfile
    >>> from moai_llm.hardware.probe import probe, simulate
    >>> facts = probe(tempfile.mkdtemp())
    >>> facts.gpu_count >= 0                 # 0 on a machine without GPU or driver: not an error
    True
    >>> simulate("8xA100-80GB").p2p[0][1]    # recorded facts, presets/hardware/
    'nvlink'

NVML (nvidia-ml-py) gives per-GPU facts and pairwise P2P status without creating a CUDA
context, so probing costs no GPU memory and works while another job uses the GPUs. torch adds
what it was built with (CUDA, NCCL). Anything that cannot be read becomes None plus a note.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import socket
from pathlib import Path

from moai_llm.hardware.facts import (
    P2P_NONE,
    P2P_NVLINK,
    P2P_PCIE,
    P2P_SELF,
    GPUFacts,
    HardwareFacts,
)
from moai_llm.hardware.simulate import simulate  # public as probe.simulate (contract)

MIB = 1024**2


def _nvml_call(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported and friends: the fact is unknown, not fatal
        return default


def _probe_gpus(facts: HardwareFacts) -> None:
    import pynvml  # nvidia-ml-py, a dependency; the driver may still be missing (below)

    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver
        facts.notes.append(f"no NVIDIA driver ({type(exc).__name__})")
        return
    try:
        facts.driver_version = _str(_nvml_call(pynvml.nvmlSystemGetDriverVersion))
        cuda = _nvml_call(pynvml.nvmlSystemGetCudaDriverVersion)
        if cuda:
            facts.driver_cuda_version = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        handles = _visible_handles(pynvml, handles, facts)
        for i, h in enumerate(handles):
            mem = _nvml_call(pynvml.nvmlDeviceGetMemoryInfo, h)
            cc = _nvml_call(pynvml.nvmlDeviceGetCudaComputeCapability, h)
            power = _nvml_call(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
            links = 0
            for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
                if _nvml_call(pynvml.nvmlDeviceGetNvLinkState, h, link) == 1:
                    links += 1
            pci = _nvml_call(pynvml.nvmlDeviceGetPciInfo, h)
            facts.gpus.append(GPUFacts(
                index=i,
                name=_str(pynvml.nvmlDeviceGetName(h)),
                memory_total_mib=int(mem.total // MIB) if mem else 0,
                memory_free_mib=int(mem.free // MIB) if mem else None,
                compute_capability=f"{cc[0]}.{cc[1]}" if cc else "",
                power_limit_w=power / 1000 if power else None,
                pcie_gen=_nvml_call(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
                pcie_width=_nvml_call(pynvml.nvmlDeviceGetMaxPcieLinkWidth, h),
                nvlink_links=links,
                pci_bus_id=_str(pci.busId) if pci else None,
            ))
        facts.p2p = _p2p_matrix(pynvml, handles)
    finally:
        _nvml_call(pynvml.nvmlShutdown)


def _visible_handles(pynvml, handles: list, facts: HardwareFacts) -> list:
    """The GPUs torch will see: CUDA_VISIBLE_DEVICES as indices (NVML order) or GPU UUIDs, in
    the order given. MIG instances and unparsable values leave the list unfiltered (noted)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return handles
    items = [x.strip() for x in raw.split(",") if x.strip()]
    chosen = []
    for item in items:
        if item.lstrip("-").isdigit():
            index = int(item)
            if index < 0 or index >= len(handles):
                break  # CUDA stops at the first invalid entry
            chosen.append(handles[index])
        elif item.startswith("GPU-"):
            match = [h for h in handles
                     if _str(_nvml_call(pynvml.nvmlDeviceGetUUID, h, default="")).startswith(item)]
            if not match:
                break
            chosen.append(match[0])
        else:
            facts.notes.append(f"CUDA_VISIBLE_DEVICES={raw}: not indices or GPU UUIDs "
                               "(MIG?); listing every GPU NVML reports")
            return handles
    facts.notes.append(f"CUDA_VISIBLE_DEVICES={raw}: {len(chosen)} of {len(handles)} GPUs visible")
    return chosen


def _p2p_matrix(pynvml, handles) -> list[list[str]]:
    """nvmlDeviceGetP2PStatus for every pair: NVLink if the NVLink index is OK, else PCIe if
    reads are OK, else none (GeForce cards, chipsets that do not route P2P)."""
    ok = getattr(pynvml, "NVML_P2P_STATUS_OK", 0)
    # nvidia-ml-py defines NVML_P2P_CAPS_INDEX_READ as the tuple (0,) (a stray comma), which
    # nvmlDeviceGetP2PStatus rejects: use NVML's numeric values (nvml.h) directly.
    read_idx, nvlink_idx = 0, 2
    n = len(handles)
    matrix = [[P2P_SELF] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if _nvml_call(pynvml.nvmlDeviceGetP2PStatus, handles[i], handles[j], nvlink_idx) == ok:
                matrix[i][j] = P2P_NVLINK
            elif _nvml_call(pynvml.nvmlDeviceGetP2PStatus, handles[i], handles[j], read_idx) == ok:
                matrix[i][j] = P2P_PCIE
            else:
                matrix[i][j] = P2P_NONE
    return matrix


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _probe_software(facts: HardwareFacts) -> None:
    import torch

    facts.torch_version = torch.__version__
    facts.torch_cuda_version = torch.version.cuda
    facts.cuda_available = bool(torch.cuda.is_available())
    if torch.version.cuda:
        try:
            facts.torch_arch_list = list(torch.cuda.get_arch_list())
        except Exception as exc:
            facts.notes.append(f"torch CUDA architectures unreadable ({type(exc).__name__})")
    if facts.cuda_available:
        try:
            v = torch.cuda.nccl.version()
            facts.nccl_version = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as exc:
            facts.notes.append(f"NCCL version unreadable ({type(exc).__name__})")
    if importlib.util.find_spec("flash_attn") is not None:
        try:
            facts.flash_attn_version = importlib.metadata.version("flash-attn")
        except importlib.metadata.PackageNotFoundError:
            facts.flash_attn_version = "unknown"


def _probe_host(facts: HardwareFacts, output_dir: str | os.PathLike | None) -> None:
    import psutil

    try:
        facts.cpu_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        facts.cpu_cores = os.cpu_count() or 1
    facts.cpu_model = platform.processor() or platform.machine()
    vm = psutil.virtual_memory()
    facts.ram_total_bytes, facts.ram_available_bytes = int(vm.total), int(vm.available)
    limit = _cgroup_memory_limit()
    if limit and limit < facts.ram_total_bytes:
        facts.notes.append(f"container memory limit {limit / 1024**3:.1f} GiB used as RAM")
        facts.ram_total_bytes = limit
        facts.ram_available_bytes = min(facts.ram_available_bytes, limit)
    target = Path(output_dir or ".").resolve()
    facts.output_dir = str(target)
    probe_dir = target
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent  # the folder may not exist yet: measure its file system
    facts.disk_free_bytes = int(shutil.disk_usage(probe_dir).free)
    facts.infiniband, facts.rdma = rdma_devices()
    facts.hostname = socket.gethostname()


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


INFINIBAND_SYSFS = Path("/sys/class/infiniband")
EFA_PCI_VENDOR = "0x1d0f"  # Amazon


def rdma_devices(root: str | os.PathLike | None = None) -> tuple[list[str], dict[str, str]]:
    """(InfiniBand devices, {other RDMA device: kind}) from every device in /sys/class/infiniband.

    The directory lists every RDMA device, not only InfiniBand ones: a port's `link_layer`
    tells them apart ("InfiniBand"; "Ethernet" for RoCE). AWS EFA devices (efa_0 or
    rdmap16s27) report "Unknown" and are recognised by their efa driver or Amazon's PCI vendor.

    >>> rdma_devices("/nonexistent")
    ([], {})
    """
    root = Path(root) if root is not None else INFINIBAND_SYSFS
    if not root.is_dir():
        return [], {}
    infiniband, others = [], {}
    for dev in sorted(root.iterdir(), key=lambda p: p.name):
        layers = set()
        for link_layer in sorted(dev.glob("ports/*/link_layer")):
            try:
                layers.add(link_layer.read_text().strip())
            except OSError:
                continue
        if "InfiniBand" in layers:
            infiniband.append(dev.name)
        elif "Ethernet" in layers:
            others[dev.name] = "roce"
        elif _is_efa(dev):
            others[dev.name] = "efa"
        else:
            others[dev.name] = "other"
    return infiniband, others


def _is_efa(dev: Path) -> bool:
    driver = dev / "device" / "driver"
    if driver.exists() and driver.resolve().name == "efa":
        return True
    try:
        return (dev / "device" / "vendor").read_text().strip() == EFA_PCI_VENDOR
    except OSError:
        return dev.name.startswith("efa")


def node_topology_from_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(nnodes, node_rank) from torchrun/SLURM variables; (1, 0) when there are none."""
    env = dict(os.environ if env is None else env)

    def _int(*names: str) -> int | None:
        for name in names:
            if env.get(name, "").strip().isdigit():
                return int(env[name])
        return None

    nnodes = _int("NNODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    if nnodes is None:
        world, local = _int("WORLD_SIZE"), _int("LOCAL_WORLD_SIZE")
        nnodes = world // local if world and local else 1
    rank = _int("NODE_RANK", "GROUP_RANK", "SLURM_NODEID") or 0
    return max(nnodes, 1), rank


def probe(output_dir: str | os.PathLike | None = None) -> HardwareFacts:
    """Facts of this machine. Never raises for missing GPUs/drivers: those become notes."""
    facts = HardwareFacts(source="probe")
    _probe_gpus(facts)
    _probe_software(facts)
    _probe_host(facts, output_dir)
    facts.nnodes, facts.node_rank = node_topology_from_env()
    if not facts.gpus and facts.cuda_available:
        facts.notes.append("torch sees CUDA but NVML does not: GPU facts incomplete")
    return facts


__all__ = ["P2P_NONE", "P2P_NVLINK", "P2P_PCIE", "HardwareFacts", "node_topology_from_env", "probe",
           "rdma_devices", "simulate"]
