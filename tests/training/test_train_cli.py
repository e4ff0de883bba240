"""The `moai pretrain` / `moai sft` command line: the seed's spellings, --config, plans."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.training.record import read_record


def test_the_seeds_train_py_flags_work_unchanged(workdir, tmp_path):
    out = tmp_path / "seed"
    result = CliRunner().invoke(app, [
        "pretrain", "--mode", "pretrain", "--model", "tiny", "--dataset", str(workdir / "docs.jsonl"),
        "--tokenizer_path", str(workdir / "tok"), "--output_dir", str(out), "--max_steps", "3",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--learning_rate", "1e-3", "--warmup_steps", "1", "--lr_scheduler_type", "cosine",
        "--save_steps", "2", "--max_seq_length", "64", "--gradient_checkpointing", "--bf16",
    ])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "run.yaml").read_text())
    s = spec["given"]["flags"]
    assert (s["max_steps"], s["learning_rate"], s["warmup"], s["lr_scheduler"]) == (3, 1e-3, 1.0, "cosine")
    assert (s["micro_batch_size"], s["seq_len"], s["save_steps"]) == (2, 64, 2)
    assert s["precision"] == "bf16" and s["gradient_checkpointing"] is True
    assert spec["plan"]["precision"] == "bf16" and spec["plan"]["gradient_checkpointing"] is True
    assert (out / "checkpoints" / "step-2").is_dir() and (out / "final_model" / "config.json").is_file()
    assert (out / "data" / "manifest.json").is_file()  # raw sources were prepared first


def test_mode_must_match_the_command(workdir, tmp_path):
    result = CliRunner().invoke(app, ["pretrain", "--mode", "sft", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "moai sft" in result.output


def test_config_file_then_flags(workdir, pretrain_args, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 50, "learning_rate": 2e-3, "weight_decay": 0.05}))
    out = tmp_path / "cfg"
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 2) + ["--config", str(cfg), "--dry-run"])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "run.yaml").read_text())
    settings = read_record(out).settings()
    assert settings.max_steps == 2  # the flag wins
    assert settings.learning_rate == 2e-3 and settings.weight_decay == 0.05
    assert spec["given"]["config_file"] == str(cfg)
    assert spec["given"]["config"]["learning_rate"] == 2e-3 and spec["given"]["config"]["max_steps"] == 50
    assert "learning_rate" not in spec["defaults"]


def test_simulated_hardware_prints_a_plan_and_trains_nothing(workdir, tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(app, [
        "pretrain", "--model", "0.5b", "--tokenizer", str(workdir / "tok"),
        "--dataset", str(workdir / "data"), "-o", str(out), "--simulate", "8xA100-80GB",
    ])
    assert result.exit_code == 0, result.output
    assert "torchrun" in result.output and "--nproc_per_node 8" in result.output
    plan = yaml.safe_load((out / "run.yaml").read_text())["plan"]
    assert plan["device"] == "cuda" and plan["precision"] == "bf16" and plan["world_size"] == 8
    assert not (out / "checkpoints").exists()
