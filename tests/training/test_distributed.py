"""Several processes: 2 gloo processes and 1 process with the same global batch follow the
same loss curve (the loss is normalised by the labelled tokens of the whole global batch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MOAI = [sys.executable, "-m", "moai_cli"]


def _losses(out):
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(workdir, pretrain_args, drop_flag, subprocess_env,
                                                           tmp_path):
    common = ["--global-batch", "8", "--lr-scheduler", "constant", "--warmup-steps", "0",
              "--learning-rate", "1e-3"]
    one, two = tmp_path / "one", tmp_path / "two"
    def args(out):
        return drop_flag(pretrain_args(workdir, out, 5), "--gradient-accumulation-steps")

    subprocess.run(MOAI + args(one) + common, check=True, env=subprocess_env,
                   capture_output=True)
    r = subprocess.run(MOAI + args(two) + common + ["--nproc", "2"],
                       env=subprocess_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    import yaml

    plan = yaml.safe_load((two / "run.yaml").read_text())["plan"]
    assert plan["world_size"] == 2 and plan["strategy"] in ("ddp", "fsdp2")
    assert plan["gradient_accumulation_steps"] == 2  # 8 = 2 micro × 2 accumulation × 2 processes
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 5
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-4, (a, b)
    assert (two / "final_model" / "model.safetensors").is_file()
    assert "done" in r.stdout


def test_dry_run_prints_the_torchrun_command_and_trains_nothing(workdir, pretrain_args, drop_flag, tmp_path):
    from typer.testing import CliRunner

    from moai_cli.app import app

    out = tmp_path / "dry"
    args = drop_flag(pretrain_args(workdir, out, 5), "--gradient-accumulation-steps")
    result = CliRunner().invoke(app, args + ["--nproc", "2", "--dry-run", "--global-batch", "8"])
    assert result.exit_code == 0, result.output
    assert "torchrun" in result.output and "moai_llm.training.worker" in result.output
    assert "--nproc_per_node 2" in result.output
    assert (out / "run.yaml").is_file() and not (out / "checkpoints").exists()


def test_multi_node_flags_reach_torchrun(workdir, pretrain_args, tmp_path):
    from typer.testing import CliRunner

    from moai_cli.app import app

    out = tmp_path / "nodes"
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 5) + [
        "--nproc", "2", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
        "--master-port", "29555", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29555" in result.output
    import yaml

    plan = yaml.safe_load((out / "run.yaml").read_text())["plan"]
    assert plan["world_size"] == 4 and plan["global_batch"] == 8  # 2 micro × 1 accumulation × 4
