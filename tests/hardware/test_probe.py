"""probe: this machine's facts (no GPU and no driver is a normal result); simulate: recorded
NVML facts of real GPUs with the topology of the boxes they come in."""

from __future__ import annotations

import orjson
import pytest
import yaml

from moai_llm.errors import MoaiInputError
from moai_llm.hardware.facts import HardwareFacts
from moai_llm.hardware.probe import node_topology_from_env, probe, simulate
from moai_llm.hardware.simulate import hardware_dir, list_hardware, parse_spec


def test_probe_without_gpu_is_a_normal_result(tmp_path):
    facts = probe(tmp_path / "not" / "created" / "yet")
    assert facts.source == "probe"
    assert facts.cpu_cores >= 1 and facts.ram_total_bytes > 2**30
    assert facts.disk_free_bytes and facts.disk_free_bytes > 0
    assert facts.torch_version
    if not facts.gpus:  # this CI machine: NVML has no driver to talk to
        assert facts.cuda_available is False
        assert any("driver" in n or "nvidia-ml-py" in n for n in facts.notes)
        assert facts.summary().startswith("no GPU")


def test_facts_round_trip_through_json(tmp_path):
    facts = simulate("8xA40-48GB")
    data = orjson.loads(orjson.dumps(facts.to_dict()))
    again = HardwareFacts.from_dict(data)
    assert again == facts
    assert again.gpus[3].memory_total_bytes == 46068 * 2**20


@pytest.mark.parametrize("env,expected", [
    ({}, (1, 0)),
    ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "1"}, (2, 1)),
    ({"SLURM_NNODES": "4", "SLURM_NODEID": "3"}, (4, 3)),
    ({"NNODES": "2", "NODE_RANK": "1", "SLURM_NNODES": "9"}, (2, 1)),
])
def test_node_count_and_rank_come_from_the_environment(env, expected):
    assert node_topology_from_env(env) == expected


@pytest.mark.parametrize("spec,count,name,mib,cc", [
    ("8xA100-80GB", 8, "NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    ("4xRTX4090-24GB", 4, "NVIDIA GeForce RTX 4090", 24564, "8.9"),
    ("4xRTX5090-32GB", 4, "NVIDIA GeForce RTX 5090", 32607, "12.0"),
    ("8xA40-48GB", 8, "NVIDIA A40", 46068, "8.6"),
    ("8xH100-80GB", 8, "NVIDIA H100 80GB HBM3", 81559, "9.0"),
    ("1xH200-141GB", 1, "NVIDIA H200", 143771, "9.0"),
    ("2xA100-40GB", 2, "NVIDIA A100-SXM4-40GB", 40960, "8.0"),
    ("8xL40S-48GB", 8, "NVIDIA L40S", 46068, "8.9"),
    ("2xH100-PCIE-80GB", 2, "NVIDIA H100 PCIe", 81559, "9.0"),
])
def test_simulate_names_from_the_issue(spec, count, name, mib, cc):
    facts = simulate(spec)
    assert facts.gpu_count == count
    assert {g.name for g in facts.gpus} == {name}
    assert facts.gpus[0].memory_total_mib == mib and facts.gpus[0].compute_capability == cc
    assert "recorded facts" in facts.source
    assert facts.cuda_available


def test_topologies_of_common_boxes():
    a100 = simulate("8xA100-80GB").p2p_pairs()
    assert a100 == {"nvlink": 28, "pcie": 0, "none": 0}  # NVSwitch: every pair
    a40 = simulate("8xA40-48GB")
    assert a40.p2p[0][3] == "pcie" and a40.p2p[0][4] == "none"  # two sockets of four
    assert simulate("4xA40-48GB").p2p_pairs()["pcie"] == 6
    assert simulate("4xRTX4090-24GB").p2p_pairs() == {"nvlink": 0, "pcie": 0, "none": 6}
    assert simulate("4xRTX5090-32GB").p2p_pairs()["none"] == 6
    assert simulate("8xH100-80GB").gpus[0].nvlink_links == 18
    assert simulate("1xH200-141GB").p2p == [["self"]]
    assert simulate("8xA100-80GB").infiniband and not simulate("4xRTX4090-24GB").infiniband


def test_multi_node_spec_and_aliases():
    assert parse_spec("2x8xH100-80GB") == (2, 8, "H100-80GB")
    assert simulate("2x8xH100-80GB").nnodes == 2
    assert simulate("4xrtx4090").gpus[0].name == "NVIDIA GeForce RTX 4090"


@pytest.mark.parametrize("spec", ["A100-80GB", "8x", "0xA100-80GB", "8xB300-999GB"])
def test_bad_simulate_specs_name_the_flag_and_a_fix(spec):
    with pytest.raises(MoaiInputError) as err:
        simulate(spec)
    assert "--simulate" in str(err.value)


def test_every_record_is_labelled_and_complete():
    assert len(list_hardware()) >= 9
    for path in hardware_dir().glob("*.yaml"):
        rec = yaml.safe_load(path.read_text())
        assert rec["recorded_facts"] is True, path
        assert rec["source"] and "uncertain" in rec, path
        gpu = rec["gpu"]
        for key in ("name", "memory_total_mib", "compute_capability", "power_limit_w",
                    "pcie_gen", "pcie_width", "nvlink_links"):
            assert key in gpu, (path, key)
        assert rec["topology"]["default"]["p2p"] in ("nvlink", "pcie", "none"), path
