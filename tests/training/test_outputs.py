"""What a run leaves on disk: files and folders that follow the umask (other users of a shared
machine can read a model under umask 022), no lone run.yaml after a failed launch, and never
the code a tokenizer folder names (unless --trust-remote-code)."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from fault_runs import moai
from faults import make_hostile
from typer.testing import CliRunner

from moai_cli.app import app


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(workdir, pretrain_args, tmp_path, umask, file_mode, dir_mode):
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        result = CliRunner().invoke(app, pretrain_args(workdir, out, 2) + ["--save-steps", "1"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    found = {}
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (dir_mode if path.is_dir() else file_mode):
            found[str(path.relative_to(out))] = oct(mode)
    assert found == {}
    for name in ("final_model/model.safetensors", "checkpoints/step-2/model.safetensors",
                 "checkpoints/step-2/optimizer.pt", "run.yaml", "metrics.jsonl", "final_model"):
        assert (out / name).exists(), name


def test_a_tokenizer_folders_code_never_runs_unless_trusted(workdir, tmp_path):
    hostile = make_hostile(shutil.copytree(workdir / "tok", tmp_path / "tok"))
    args = ["pretrain", "--model", "tiny", "--tokenizer", str(hostile), "--dataset", str(workdir / "docs.jsonl"),
            "--seq-len", "64", "--max-steps", "1", "--batch-size", "2", "--gradient-accumulation-steps", "1"]
    result = CliRunner().invoke(app, args + ["-o", str(tmp_path / "plain")], input="y\n")
    assert result.exit_code == 0, result.output
    assert not (hostile / "MARKER").exists(), "the folder's code ran"
    result = CliRunner().invoke(app, args + ["-o", str(tmp_path / "trusted"), "--trust-remote-code"],
                                input="y\n")
    assert (hostile / "MARKER").exists()  # the flag is what runs it


@pytest.mark.slow
def test_a_failed_launch_leaves_no_lone_run_yaml(workdir, tmp_path):
    """Both torchrun workers die before the first step (SIGKILL at the fault point run.start):
    the launch fails (exit 1) and the folder it made is gone, lock file included."""
    out = tmp_path / "run"
    args = ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", workdir / "data",
            "--output-dir", out, "--max-steps", "2", "--batch-size", "2", "--global-batch", "4",
            "--nproc", "2"]
    run = moai(args, env={"MOAI_FAULT_KILL_AT": "run.start"})
    assert run.code == 1, run.output
    assert not out.exists() and list(tmp_path.iterdir()) == []
