"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run
(CPU, fp32): model, optimizer, scheduler, RNG and data position are all restored."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

MOAI = [sys.executable, "-m", "moai_cli"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(workdir, pretrain_args, subprocess_env, tmp_path):
    from safetensors.torch import load_file

    steps = 120
    extra = ["--save-steps", "10", "--save-total-limit", "2", "--seq-len", "64"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(MOAI + pretrain_args(workdir, full, steps) + extra, check=True,
                   env=subprocess_env, capture_output=True)

    proc = subprocess.Popen(MOAI + pretrain_args(workdir, killed, steps) + extra, env=subprocess_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-20").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final_model").exists()
    assert proc.returncode == -signal.SIGKILL

    resumed = subprocess.run(MOAI + pretrain_args(workdir, killed, steps) + extra + ["--resume"],
                             env=subprocess_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    a = load_file(str(full / "final_model" / "model.safetensors"))
    b = load_file(str(killed / "final_model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    # the metrics of the resumed run read as one run: each step once
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    import json

    train_steps = [json.loads(x)["step"] for x in lines if '"loss"' in x]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == steps


def test_resume_auto_starts_fresh_and_resume_without_checkpoint_fails(workdir, pretrain_args, tmp_path):
    from typer.testing import CliRunner

    from moai_cli.app import app

    out = tmp_path / "fresh"
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 2) + ["--resume"])
    assert result.exit_code == 2
    assert "no checkpoint" in result.output
    assert not (out / "run.yaml").exists()  # nothing was started
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 2) + ["--resume", "auto"])
    assert result.exit_code == 0, result.output
    import yaml

    assert yaml.safe_load((out / "run.yaml").read_text())["resume"] is None  # nothing to resume
    # a finished run resumed again says it is complete and changes nothing
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 2) + ["--resume", "auto"])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "resuming from" not in result.output
    assert "nan" not in result.output
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    # with more steps asked for, it resumes, and run.yaml records from where
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 3) + ["--resume", "auto"])
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output
    import yaml

    spec = yaml.safe_load((out / "run.yaml").read_text())
    assert spec["resume"] == {"requested": "auto", "checkpoint": str(out / "checkpoints" / "step-2"),
                              "step": 2}
    assert spec["given"]["flags"]["resume"] == "auto"  # what was typed stays as typed


def test_a_run_recorded_by_an_earlier_moai_resumes(workdir, pretrain_args, tmp_path):
    """A run.yaml without the sections this version adds (schedule, base_model) resumes: every
    launch resolves its inputs again and writes a complete run.yaml before a worker reads it."""
    import yaml
    from typer.testing import CliRunner

    from moai_cli.app import app

    out = tmp_path / "run"
    args = pretrain_args(workdir, out, 2) + ["--save-steps", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    record = yaml.safe_load((out / "run.yaml").read_text())
    for section in ("schedule", "base_model"):
        record.pop(section)
    (out / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    more = pretrain_args(workdir, out, 3) + ["--save-steps", "1", "--resume", "auto"]
    result = CliRunner().invoke(app, more)
    assert result.exit_code == 0, result.output
    again = yaml.safe_load((out / "run.yaml").read_text())
    assert again["schedule"]["total_steps"] == 3 and again["resume"]["step"] == 2
