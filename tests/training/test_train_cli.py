"""The `moai pretrain` / `moai sft` command line: the seed's spellings, --config, plans."""

from __future__ import annotations

import json

import pytest
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


def _parsed(command: str, args: list[str]) -> dict:
    from typer.main import get_command

    cmd = get_command(app).commands[command]
    ctx = cmd.make_context(command, list(args))
    return {k: v for k, v in ctx.params.items() if v not in (None, False, ())}


SPELLINGS = [  # (command, alias spelling, the one visible spelling)
    ("pretrain", ["--output_dir", "x"], ["--output-dir", "x"]),
    ("pretrain", ["-o", "x"], ["--output-dir", "x"]),
    ("pretrain", ["--max_steps", "5"], ["--max-steps", "5"]),
    ("pretrain", ["--tokenizer_path", "t"], ["--tokenizer", "t"]),
    ("pretrain", ["--tokenizer-path", "t"], ["--tokenizer", "t"]),
    ("pretrain", ["--pretrained_model", "m"], ["--pretrained-model", "m"]),
    ("pretrain", ["--dataset_config", "c"], ["--dataset-config", "c"]),
    ("pretrain", ["--input", "a", "-i", "b"], ["--dataset", "a", "--dataset", "b"]),
    ("pretrain", ["--per_device_train_batch_size", "2"], ["--batch-size", "2"]),
    ("pretrain", ["--lr_scheduler_type", "cosine"], ["--lr-scheduler", "cosine"]),
    ("pretrain", ["--lr", "0.1"], ["--learning-rate", "0.1"]),
    ("pretrain", ["--warmup_steps", "5"], ["--warmup-steps", "5"]),
    ("pretrain", ["--warmup", "5"], ["--warmup-steps", "5"]),
    ("pretrain", ["--max_seq_length", "64"], ["--seq-len", "64"]),
    ("pretrain", ["--bf16"], ["--precision", "bf16"]),
    ("pretrain", ["--fp32"], ["--precision", "fp32"]),
    ("pretrain", ["--gradient_checkpointing"], ["--gradient-checkpointing"]),
    ("pretrain", ["--preset", "auto"], ["--hardware", "auto"]),
    ("pretrain", ["--nproc-per-node", "2"], ["--nproc", "2"]),
    ("pretrain", ["--model_config=f.yaml"], ["--model-config", "f.yaml"]),
    ("sft", ["--model_path", "m"], ["--pretrained-model", "m"]),
    ("sft", ["--model-path", "m"], ["--pretrained-model", "m"]),
    ("doctor", ["--seq_len", "64", "--nproc_per_node", "2"], ["--seq-len", "64", "--nproc", "2"]),
    ("quickstart", ["-o", "q", "--max_steps", "3", "-q", "hi"],
     ["--output-dir", "q", "--max-steps", "3", "--question", "hi"]),
]


@pytest.mark.parametrize("command,alias,canonical", SPELLINGS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_hidden_spellings_parse_as_the_visible_one(command, alias, canonical):
    assert _parsed(command, alias) == _parsed(command, canonical) != {}


def test_every_option_accepts_its_underscore_spelling():
    from typer.main import get_command

    cmd = get_command(app).commands["pretrain"]
    for param in cmd.params:
        flag = param.opts[0] if param.param_type_name == "option" else ""
        if "-" in flag[2:] and not param.is_flag:
            assert _parsed("pretrain", [flag.replace("-", "_").replace("__", "--", 1), "7"]) == \
                _parsed("pretrain", [flag, "7"]), flag


def test_dry_run_needs_no_tokenizer_or_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["pretrain", "--preset", "auto", "--simulate", "4xRTX4090-24GB",
                                      "--model", "2b", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "no tokenizer: planning with the 2b preset's vocabulary (92,759 tokens)" in result.output
    assert "no dataset: planning for --seq-len 2048 (default)" in result.output
    assert "--nproc_per_node 4" in result.output and "# strategy: fsdp2" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written
    as_json = CliRunner().invoke(app, ["pretrain", "--hardware", "auto", "--simulate", "1xH200-141GB",
                                       "--model", "0.5b", "--seq-len", "1024", "--json"])
    assert as_json.exit_code == 0, as_json.output
    plan = json.loads(as_json.stdout)["plan"]
    assert plan["seq_len"] == 1024 and "vocab 92759" in plan["model"] and plan["world_size"] == 1


def test_final_messages_keep_paths_whole_at_80_columns(workdir, pretrain_args, tmp_path):
    out = tmp_path / ("a-rather-long-folder-name-for-runs-" * 2) / "pretrain-output"
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 1), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert len(str(out)) > 80
    lines = result.stdout.splitlines()
    assert any(f"{out}/final_model" in line for line in lines)
    assert any(f"{out}/metrics.jsonl" in line for line in lines)


def test_progress_without_a_terminal_is_plain_lines(workdir, pretrain_args, subprocess_env, tmp_path):
    """nohup/SLURM: stderr is a file, so progress comes as log lines while the run goes."""
    import subprocess
    import sys

    args = pretrain_args(workdir, tmp_path / "run", 6)
    args[args.index("--logging-steps") + 1] = "2"
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run([sys.executable, "-m", "moai_cli", *args], stdout=log, stderr=log,
                              env=subprocess_env, timeout=300)
    text = (tmp_path / "log.txt").read_text()
    assert done.returncode == 0, text[-2000:]
    lines = [line for line in text.splitlines() if line.startswith("pretrain ")]
    assert [line.split(" ·")[0] for line in lines] == ["pretrain 2/6 (33%)", "pretrain 4/6 (67%)",
                                                        "pretrain 6/6 (100%)"]
    assert all("step/s" in line and "loss " in line for line in lines)
    assert "\x1b[" not in text  # no terminal control sequences in a log file
