"""A run never deletes what moai did not make (moai_llm.ownership, moai_llm.locks): a fresh launch
into a user's folder or a finished run, `-o /`, a symlink to a running run's folder, a rebuild of
the dataset a run reads: each is refused with exit 2 and every file that was there before is
still there, byte for byte. `--resume auto` skips a damaged newest checkpoint, saying why."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from fault_runs import moai, start, wait_stopped


def _snapshot(root):
    """Every file under `root` (lock and reader files of live runs aside) with its bytes."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))
            if not p.name.endswith((".lock", ".readers")) and ".readers" not in p.parts[-2:-1]}


def _args(workdir, out, steps=2, data=None):
    return ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", data or workdir / "data",
            "--output-dir", out, "--max-steps", str(steps), "--batch-size", "2",
            "--gradient-accumulation-steps", "1", "--logging-steps", "1", "--save-steps", "2"]


def _refused(result, *words):
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]


def test_a_fresh_launch_into_a_users_folder_is_refused_and_changes_nothing(workdir, tmp_path):
    out = tmp_path / "mine"
    (out / "tb").mkdir(parents=True)
    (out / "tb" / "events.out").write_bytes(b"\x00my tensorboard")
    (out / "run.yaml").write_text("my: notes\n")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    (out / "final_model").mkdir()
    (out / "final_model" / "model.safetensors").write_bytes(b"weights")
    before = _snapshot(tmp_path)
    for extra in ([], ["--resume", "auto"]):
        _refused(moai(_args(workdir, out) + extra), str(out), "is not a run folder")
        assert _snapshot(tmp_path) == before


def test_a_fresh_launch_never_restarts_a_finished_run(workdir, tmp_path):
    out = tmp_path / "run"
    assert moai(_args(workdir, out)).code == 0
    shutil.rmtree(out / "checkpoints")  # a finished run kept without its checkpoints
    before = _snapshot(tmp_path)
    result = moai(_args(workdir, out))
    _refused(result, "finished run")
    assert "--resume auto" in result.output
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["/", "~", "."])
def test_the_root_home_and_current_folders_are_refused(workdir, tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    _refused(moai(_args(workdir, where)), "--output-dir")
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_symlink_to_a_running_runs_folder_meets_its_lock(workdir, tmp_path):
    real, link = tmp_path / "c5", tmp_path / "a5"
    link.symlink_to(real.name)
    first, log = start(_args(workdir, real, steps=4), env={"MOAI_FAULT_STOP_AT": "checkpoint.after_rename#1"})
    try:
        wait_stopped(first)
        before = _snapshot(real)
        second = moai(_args(workdir, link, steps=4) + ["--resume", "auto"])
        _refused(second, f"pid {first.pid}")
        assert _snapshot(real) == before  # metrics.jsonl and the checkpoint untouched
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.join(120)
    assert first.exitcode == 0, log.read_text()


@pytest.mark.slow
def test_a_dataset_cannot_be_rebuilt_while_a_run_reads_it(workdir, tmp_path):
    data = tmp_path / "DS3"
    shutil.copytree(workdir / "data", data)
    (data / "NOTES.txt").write_text("my notes on this dataset")
    first, log = start(_args(workdir, tmp_path / "run", steps=4, data=data),
                       env={"MOAI_FAULT_STOP_AT": "checkpoint.after_rename#1"})
    try:
        wait_stopped(first)
        before = _snapshot(data)
        rebuild = moai(["data", "prepare", "-i", workdir / "docs.jsonl", "--tokenizer", workdir / "tok",
                        "--seq-len", "128", "-o", data, "--force"])
        assert rebuild.code == 2 and "Traceback" not in rebuild.output, rebuild.output
        assert _snapshot(data) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.join(120)
    assert first.exitcode == 0, log.read_text()


def _damage(checkpoint, how):
    if how == "truncated weights":
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "empty optimizer":
        (checkpoint / "optimizer.pt").write_bytes(b"")
    else:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "step": "six"}))


@pytest.mark.parametrize("how", ["truncated weights", "empty optimizer", "step six"])
def test_resume_auto_falls_back_past_a_damaged_newest_checkpoint(workdir, tmp_path, how):
    out = tmp_path / "run"
    first = moai(_args(workdir, out, steps=6) + ["--save-total-limit", "3"], kill_at="final.begin")
    assert first.code == -signal.SIGKILL, first.output
    _damage(out / "checkpoints" / "step-6", how)
    result = moai(_args(workdir, out, steps=6) + ["--save-total-limit", "3", "--resume", "auto"])
    assert result.code == 0, result.output
    assert "skipping" in result.output and "step-6" in result.output, result.output
    assert "resuming from" in result.output and "step-4, the newest whole checkpoint" in result.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps[-2:] == [5, 6]  # trained again from step 4
    assert json.loads((out / "final_model" / "training_state.json").read_text())["step"] == 6
