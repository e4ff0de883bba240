"""probe's NVML path, exercised through a stand-in `pynvml` module (no GPU on CI): two NVLink'd
A100s and a GeForce pair without P2P, read the way NVML reports them."""

from __future__ import annotations

import sys
import types

import pytest

from moai_llm.hardware.probe import probe


class _NVMLError(Exception):
    pass


def fake_pynvml(names: list[str], p2p: dict[tuple[int, int, int], int], links: int) -> types.ModuleType:
    """A module with the pynvml calls probe uses; p2p maps (i, j, caps_index) -> status."""
    m = types.ModuleType("pynvml")
    m.NVML_P2P_STATUS_OK = 0
    m.NVML_P2P_CAPS_INDEX_READ = (0,)  # as nvidia-ml-py really defines it
    m.NVML_P2P_CAPS_INDEX_NVLINK = 2
    m.NVML_NVLINK_MAX_LINKS = 18
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040
    m.nvmlDeviceGetCount = lambda: len(names)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: names[h]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=81920 * 2**20, free=81000 * 2**20)
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 0)
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 400000

    def nvlink_state(h, link):
        if link >= links:
            raise _NVMLError("not supported")
        return 1

    def p2p_status(a, b, index):
        if not isinstance(index, int):
            raise TypeError("index must be an int")
        return p2p.get((a, b, index), 4)  # 4 = NVML_P2P_STATUS_NOT_SUPPORTED

    m.nvmlDeviceGetNvLinkState = nvlink_state
    m.nvmlDeviceGetP2PStatus = p2p_status
    m.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 4
    m.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h:08d}-aaaa"
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=f"00000000:{h + 7:02X}:00.0".encode())
    return m


@pytest.fixture
def nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def install(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
    return install


def test_nvlink_pair_is_read_from_nvml(nvml, tmp_path):
    both = {(0, 1, 2): 0, (1, 0, 2): 0, (0, 1, 0): 0, (1, 0, 0): 0}
    nvml(fake_pynvml(["NVIDIA A100-SXM4-80GB"] * 2, both, links=12))
    facts = probe(tmp_path)
    assert [g.name for g in facts.gpus] == ["NVIDIA A100-SXM4-80GB"] * 2
    g = facts.gpus[0]
    assert (g.memory_total_mib, g.memory_free_mib, g.compute_capability) == (81920, 81000, "8.0")
    assert (g.power_limit_w, g.pcie_gen, g.pcie_width, g.nvlink_links) == (400, 4, 16, 12)
    assert g.pci_bus_id == "00000000:07:00.0"
    assert facts.driver_version == "550.54.15" and facts.driver_cuda_version == "12.4"
    assert facts.p2p == [["self", "nvlink"], ["nvlink", "self"]]


def test_pcie_p2p_and_no_p2p_pairs(nvml, tmp_path):
    read_only = {(0, 1, 0): 0, (1, 0, 0): 0}
    nvml(fake_pynvml(["NVIDIA A40"] * 3, read_only, links=0))
    facts = probe(tmp_path)
    assert facts.p2p[0][1] == "pcie" and facts.p2p[0][2] == "none"
    assert facts.p2p_pairs() == {"nvlink": 0, "pcie": 1, "none": 2}
    assert facts.gpus[0].nvlink_links == 0


def test_driver_not_loaded_is_a_note(nvml, tmp_path):
    m = fake_pynvml([], {}, 0)

    def boom():
        raise _NVMLError("Driver Not Loaded")

    m.nvmlInit = boom
    nvml(m)
    facts = probe(tmp_path)
    assert facts.gpus == [] and any("no NVIDIA driver" in n for n in facts.notes)


@pytest.mark.parametrize("visible,expected_bus", [
    ("2,0", ["00000000:09:00.0", "00000000:07:00.0"]),
    ("GPU-00000001", ["00000000:08:00.0"]),
    ("", []),
    ("1,7,2", ["00000000:08:00.0"]),  # CUDA stops at the first invalid index
])
def test_cuda_visible_devices_limits_and_orders_the_gpus(nvml, monkeypatch, tmp_path, visible,
                                                        expected_bus):
    nvml(fake_pynvml(["NVIDIA A40"] * 3, {(2, 0, 0): 0, (0, 2, 0): 0}, links=0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    facts = probe(tmp_path)
    assert [g.pci_bus_id for g in facts.gpus] == expected_bus
    assert [g.index for g in facts.gpus] == list(range(len(expected_bus)))
    if visible == "2,0":
        assert facts.p2p == [["self", "pcie"], ["pcie", "self"]]
