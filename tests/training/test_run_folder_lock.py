"""One run per output folder: the launching process holds the folder's lock (moai_llm.locks)
for the whole run; a second launch into the same folder gets one line naming the owner, exit 2,
and touches nothing of the first run, which then finishes as if alone."""

from __future__ import annotations

import os
import signal

import pytest
from fault_runs import leftovers, moai, problems, start, wait_stopped


def _args(workdir, out, steps=6):
    return ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", workdir / "data",
            "--output-dir", out, "--max-steps", str(steps), "--batch-size", "2",
            "--gradient-accumulation-steps", "1", "--logging-steps", "1", "--save-steps", "2"]


def _snapshot(root):
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_a_second_launch_into_a_running_folder_is_refused_and_changes_nothing(workdir, tmp_path):
    out = tmp_path / "run"
    first, log = start(_args(workdir, out), env={"MOAI_FAULT_STOP_AT": "checkpoint.after_rename#1"})
    try:
        wait_stopped(first)  # alive, holding the lock, one checkpoint written
        before = _snapshot(tmp_path)
        for extra in ([], ["--resume", "auto"]):
            second = moai(_args(workdir, out) + extra)
            assert second.code == 2, second.output
            errors = [line for line in second.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and f"is in use by moai pretrain (pid {first.pid} on" in errors[0], \
                second.output
            assert "Traceback" not in second.output
            assert _snapshot(tmp_path) == before  # run.yaml, metrics.jsonl, checkpoints untouched
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.join(120)
    assert first.exitcode == 0, log.read_text()
    assert (out / "final_model" / "model.safetensors").is_file() and problems(out) == []
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 6 and leftovers(out) == []
