"""`moai doctor`: facts, checks with fixes, the plan; exit 0 unless a check fails. And the checks
themselves on facts that should fail or warn."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.hardware.checks import FAIL, PASS, WARN, run_checks
from moai_llm.hardware.facts import GPUFacts
from moai_llm.hardware.probe import simulate

runner = CliRunner()


def _status(checks, name):
    return next(c for c in checks if c.name == name)


def test_doctor_on_this_machine_exits_0(tmp_path):
    result = runner.invoke(app, ["doctor", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "checks" in result.output and "overall" in result.output


def test_doctor_json_simulated_8xa100_with_plan():
    result = runner.invoke(app, ["doctor", "--simulate", "8xA100-80GB", "--model", "3b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["parameters"] == 3_016_079_872
    assert data["plan"]["nproc_per_node"] == 8 and data["plan"]["reasons"]["strategy"]
    assert data["memory"]["peak_reserved"] < 80 * 2**30
    assert data["facts"]["gpus"][0]["memory_total_mib"] == 81920
    assert {c["name"] for c in data["checks"]} >= {"gpu", "driver", "flash-attn", "p2p", "disk", "plan-fits"}
    assert data["status"] == "warn"  # flash-attn is not recorded as installed


def test_doctor_models_lists_exact_parameter_counts():
    result = runner.invoke(app, ["doctor", "--models", "--json"])
    rows = {r["preset"]: r["parameters"] for r in json.loads(result.stdout)["models"]}
    assert rows["2b"] == 2_013_018_880 and rows["seed-3b"] == 5_121_772_288
    text = runner.invoke(app, ["doctor", "--models"]).output
    assert "3,016,079,872" in text


def test_doctor_shows_the_model_parameter_count_and_plan_reasons():
    result = runner.invoke(app, ["doctor", "--simulate", "4xRTX4090-24GB", "--model", "2b"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2,013,018,880 parameters" in result.output
    assert "NCCL_P2P_DISABLE" in result.output and "no P2P between any GPU pair" in result.output


def test_doctor_exits_1_when_the_model_cannot_fit():
    result = runner.invoke(app, ["doctor", "--simulate", "1xRTX4090-24GB", "--model", "seed-3b",
                                 "--seq-len", "4096"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "does not fit" in result.output


def test_doctor_bad_simulate_is_a_usage_error_without_traceback():
    proc = subprocess.run(["moai", "doctor", "--simulate", "8xB999"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--simulate" in proc.stderr and "Traceback" not in proc.stderr


def test_driver_too_old_for_torch_fails_and_minor_mismatch_warns():
    facts = simulate("2xA100-80GB")
    old = dataclasses.replace(facts, driver_version="470.82.01", driver_cuda_version="11.4")
    check = _status(run_checks(old), "driver")
    assert check.status == FAIL and ">= 550.54.14" in check.fix
    minor = dataclasses.replace(facts, driver_version="535.104.05", driver_cuda_version="12.2")
    assert _status(run_checks(minor), "driver").status == WARN
    assert _status(run_checks(facts), "driver").status == PASS


def test_gpus_without_cuda_torch_fail_and_blackwell_needs_cuda_12_8():
    facts = dataclasses.replace(simulate("1xA40-48GB"), cuda_available=False, torch_cuda_version=None)
    assert _status(run_checks(facts), "torch-cuda").status == FAIL
    blackwell = dataclasses.replace(simulate("1xRTX5090-32GB"), torch_cuda_version="12.4")
    assert _status(run_checks(blackwell), "arch").status == FAIL


def test_torch_without_kernels_for_the_gpu_fails():
    facts = simulate("1xRTX5090-32GB")
    old_build = dataclasses.replace(facts, torch_cuda_version="12.8",
                                    torch_arch_list=["sm_50", "sm_80", "sm_86", "sm_90"])
    check = _status(run_checks(old_build), "arch")
    assert check.status == FAIL and "12.0" in check.message
    a40 = dataclasses.replace(simulate("1xA40-48GB"), torch_arch_list=["sm_80", "sm_90"])
    assert not [c for c in run_checks(a40) if c.name == "arch"]  # sm_80 binaries run on 8.6
    ptx = dataclasses.replace(facts, torch_arch_list=["sm_90", "compute_90"])
    assert not [c for c in run_checks(ptx) if c.name == "arch"]


def test_flash_attn_p2p_mixed_gpus_and_disk():
    facts = simulate("4xRTX4090-24GB")
    checks = run_checks(facts, params=2_000_000_000)
    assert _status(checks, "flash-attn").status == WARN
    assert _status(checks, "p2p").status == WARN and "6 of 6" in _status(checks, "p2p").message
    mixed = dataclasses.replace(facts, gpus=[*facts.gpus[:3], GPUFacts(3, "NVIDIA A40", 46068, 46068, "8.6")])
    assert _status(run_checks(mixed), "mixed-gpus").status == WARN
    tiny_disk = dataclasses.replace(facts, disk_free_bytes=10 * 2**30)
    assert _status(run_checks(tiny_disk, params=2_000_000_000), "disk").status == FAIL
    # 2B parameters: a checkpoint is ~22.4 GiB, final_model/ ~7.5 GiB; a run keeping one
    # checkpoint writes a second before it removes the first: ~52 GiB, which doctor and the run
    # both refuse on a disk that holds one checkpoint but not that.
    some_disk = dataclasses.replace(facts, disk_free_bytes=40 * 2**30)
    assert _status(run_checks(some_disk, params=2_000_000_000, keep_checkpoints=1), "disk").status == FAIL
    big_disk = dataclasses.replace(facts, disk_free_bytes=60 * 2**30)
    assert _status(run_checks(big_disk, params=2_000_000_000, keep_checkpoints=1), "disk").status == PASS
    assert _status(run_checks(big_disk, params=2_000_000_000, keep_checkpoints=3), "disk").status == FAIL
    with_fa = dataclasses.replace(facts, flash_attn_version="2.7.4")
    assert _status(run_checks(with_fa), "flash-attn").status == PASS


@pytest.mark.parametrize("spec", ["8xA40-48GB", "1xH200-141GB", "2x8xH100-80GB"])
def test_doctor_simulates_every_box_without_failing(spec):
    result = runner.invoke(app, ["doctor", "--simulate", spec, "--model", "0.5b", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plan"]["nnodes"] == (2 if spec.startswith("2x8") else 1)


def _plan_json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output  # doctor exits 1 when a check fails
    return json.loads(result.stdout)["plan"]


PLAN_FLAGS = [
    ["--model", "2b", "--simulate", "8xA100-80GB"],
    ["--model", "2b", "--simulate", "4xRTX4090-24GB", "--seq-len", "1024"],
    ["--model", "3b", "--simulate", "1xH200-141GB", "--global-batch", "256"],
    ["--model", "seed-3b", "--simulate", "2x8xH100-80GB", "--batch-size", "4"],
    ["--model", "0.5b", "--simulate", "8xA40-48GB", "--nproc", "4", "--bf16",
     "--gradient-checkpointing", "--global-batch", "128", "--gradient-accumulation-steps", "4"],
    ["--model", "qwen3-4b", "--simulate", "1xRTX4090-24GB", "--lora-rank", "16"],
    ["--model", "qwen3-8b", "--simulate", "2xRTX4090-24GB", "--lora-rank", "8", "--lora-target", "q_proj,v_proj"],
]


@pytest.mark.parametrize("flags", PLAN_FLAGS, ids=lambda f: " ".join(f[1:4]))
def test_doctor_and_pretrain_dry_run_show_the_same_plan(flags):
    """The same flags give the same plan from `moai doctor` and `moai pretrain --dry-run`:
    one planner, one set of defaults (seq_len included)."""
    doctor = _plan_json(["doctor", *flags, "--json"])
    dry_run = _plan_json(["pretrain", *flags, "--dry-run", "--json"])
    assert doctor == dry_run
    from moai_llm.training.settings import TrainSettings

    seq_len = int(flags[flags.index("--seq-len") + 1]) if "--seq-len" in flags else TrainSettings().seq_len
    assert doctor["seq_len"] == seq_len and doctor["reasons"]["micro_batch_size"]


def test_doctor_and_pretrain_dry_run_agree_on_this_machine(tmp_path):
    """Probed facts: RAM available moves between two probes, so the memory budget may differ
    slightly; every decision must not."""
    flags = ["--model", "tiny", "--output-dir", str(tmp_path / "run")]
    doctor = _plan_json(["doctor", *flags, "--json"])
    dry_run = _plan_json(["pretrain", *flags, "--dry-run", "--json"])
    for plan in (doctor, dry_run):
        plan.pop("device_memory_bytes")
        plan["reasons"].pop("memory")
    assert doctor == dry_run
    assert not (tmp_path / "run").exists()  # a plan-only dry run writes nothing


def test_lora_makes_qwen3_4b_fit_a_24gb_gpu_that_full_training_does_not():
    """Frozen weights need no gradients or AdamW states, and under bf16 the frozen decoder
    layers are held in bf16: 4B parameters train as adapters on one RTX 4090."""
    full = _plan_json(["doctor", "--simulate", "1xRTX4090-24GB", "--model", "qwen3-4b", "--json"])
    lora = _plan_json(["doctor", "--simulate", "1xRTX4090-24GB", "--model", "qwen3-4b", "--lora-rank", "16", "--json"])
    assert any("does not fit" in w for w in full["warnings"])
    assert not lora["warnings"] and lora["micro_batch_size"] >= 1
    assert lora["predicted_peak_bytes"] < 0.92 * 24 * 2**30 < full["predicted_peak_bytes"]
    assert lora["lora"]["frozen_dtype"] == "bf16" and lora["lora"]["trainable"] == 33030144
    assert "trainable parameters" in lora["reasons"]["lora"]


def test_doctor_lora_4bit_plans_a_4bit_base():
    """`--lora-4bit` reaches the planner (training/adaptation.lora_facts: base_4bit): the frozen
    base is held in nf4, and qwen3-8b's rank-16 adapters fit one RTX 4090 where a bf16 base does not."""
    bf16 = _plan_json(["doctor", "--simulate", "1xRTX4090-24GB", "--model", "qwen3-8b", "--lora-rank", "16", "--json"])
    nf4 = _plan_json(["doctor", "--simulate", "1xRTX4090-24GB", "--model", "qwen3-8b", "--lora-rank", "16",
                      "--lora-4bit", "--json"])
    assert nf4["lora"]["frozen_dtype"] == "nf4" and bf16["lora"]["frozen_dtype"] == "bf16"
    assert nf4["predicted_peak_bytes"] < 0.92 * 24 * 2**30 < bf16["predicted_peak_bytes"]
