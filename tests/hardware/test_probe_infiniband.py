"""The probe reads every device in /sys/class/infiniband and tells InfiniBand ports from RoCE
and EFA by each port's link_layer (fake sysfs trees laid out as the kernel writes them); the
recorded boxes say what that probe would report there, in logical CPUs, with one peak table."""

from __future__ import annotations

import os

import pytest
import yaml

from moai_llm.hardware import probe as probe_module
from moai_llm.hardware.probe import rdma_devices, simulate
from moai_llm.hardware.simulate import hardware_dir

# DGX H100 user guide, "Network Modules" table: the eight compute ports (OSFP, InfiniBand).
DGX_H100_COMPUTE = ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]


def _device(root, name, link_layers, vendor="0x15b3", driver=None):
    """A device folder as the kernel lays it out: ports/<n>/link_layer, device/vendor."""
    dev = root / name
    for port, layer in enumerate(link_layers, start=1):
        (dev / "ports" / str(port)).mkdir(parents=True)
        (dev / "ports" / str(port) / "link_layer").write_text(layer + "\n")
    (dev / "device").mkdir(parents=True, exist_ok=True)
    (dev / "device" / "vendor").write_text(vendor + "\n")
    if driver:
        target = root.parent / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dev / "device" / "driver")


def test_dgx_h100_compute_ports_are_the_infiniband_ones(tmp_path):
    root = tmp_path / "infiniband"
    for i in range(12):
        name = f"mlx5_{i}"
        _device(root, name, ["InfiniBand" if name in DGX_H100_COMPUTE else "Ethernet"])
    infiniband, others = rdma_devices(root)
    assert sorted(infiniband) == sorted(DGX_H100_COMPUTE)  # all twelve devices were read
    assert others == {"mlx5_1": "roce", "mlx5_2": "roce", "mlx5_7": "roce", "mlx5_8": "roce"}


def test_efa_is_rdma_but_not_infiniband(tmp_path):
    root = tmp_path / "infiniband"
    for i in range(4):  # p4d.24xlarge: four EFA devices; link_layer reads "Unknown"
        _device(root, f"efa_{i}", ["Unknown"], vendor="0x1d0f", driver="efa")
    _device(root, "rdmap16s27", ["Unknown"], vendor="0x1d0f")  # newer kernels' EFA names
    _device(root, "siw0", ["Unknown"], vendor="0x8086")  # some other RDMA device
    infiniband, others = rdma_devices(root)
    assert infiniband == []
    assert others == {"efa_0": "efa", "efa_1": "efa", "efa_2": "efa", "efa_3": "efa",
                      "rdmap16s27": "efa", "siw0": "other"}  # fmt: skip


def test_a_device_with_one_infiniband_port_counts_and_unreadable_ports_do_not(tmp_path):
    root = tmp_path / "infiniband"
    _device(root, "mlx5_0", ["Ethernet", "InfiniBand"])
    _device(root, "mlx5_1", [])  # no ports folder readable: not InfiniBand
    assert rdma_devices(root) == (["mlx5_0"], {"mlx5_1": "other"})
    assert rdma_devices(tmp_path / "missing") == ([], {})


def test_probe_reports_both_lists(tmp_path, monkeypatch):
    root = tmp_path / "infiniband"
    _device(root, "mlx5_0", ["InfiniBand"])
    _device(root, "mlx5_1", ["Ethernet"])
    monkeypatch.setattr(probe_module, "INFINIBAND_SYSFS", root)
    facts = probe_module.probe(tmp_path)
    assert facts.infiniband == ["mlx5_0"] and facts.rdma == {"mlx5_1": "roce"}


@pytest.mark.parametrize("spec,infiniband,kinds", [
    ("8xH100-80GB", DGX_H100_COMPUTE, {"roce"}),
    ("8xA100-80GB", [f"mlx5_{i}" for i in (0, 1, 2, 3, 6, 7, 8, 9)], {"roce"}),
    ("8xA100-40GB", [], {"efa"}),  # p4d: EFA, not InfiniBand
    ("8xA40-48GB", [], set()),
])  # fmt: skip
def test_recorded_boxes_report_what_the_probe_would(spec, infiniband, kinds):
    facts = simulate(spec)
    assert sorted(facts.infiniband) == sorted(infiniband)
    assert set(facts.rdma.values()) == kinds
    assert not set(facts.infiniband) & set(facts.rdma)


def test_records_give_one_peak_table_and_agree_where_boxes_are_alike():
    records = [yaml.safe_load(p.read_text()) for p in sorted(hardware_dir().glob("*.yaml"))]
    names = [r["gpu"]["name"] for r in records]
    assert len(names) == len(set(names))  # an NVML name finds exactly one record
    peaks = {r["gpu"]["name"]: r["peak_tflops"] for r in records}
    for name, peak in peaks.items():
        assert set(peak) == {"bf16", "tf32", "fp32"}, name
        assert peak["fp32"] <= peak["tf32"] <= peak["bf16"], name  # dense, fp32 accumulate
    assert peaks["NVIDIA H100 PCIe"]["bf16"] < peaks["NVIDIA H100 80GB HBM3"]["bf16"]
    # The three dual-socket PCIe boxes report P2P across sockets the same way.
    matrices = {spec: simulate(spec).p2p for spec in ("8xA40-48GB", "8xL40S-48GB", "8xH100-PCIE-80GB")}
    assert len({str(m) for m in matrices.values()}) == 1
    # Logical CPUs, as the probe counts them: DGX A100 has 256 threads, DGX H100 224.
    assert simulate("8xA100-80GB").cpu_cores == 256 and simulate("8xH100-80GB").cpu_cores == 224
