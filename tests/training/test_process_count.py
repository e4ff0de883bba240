"""Resume on another number of processes: the data position is one number (samples consumed),
so a run started with 2 processes (torchrun, gloo) and resumed with 1, or the other way, with
the same global batch, trains on the same samples in the same order and reaches the loss of an
uninterrupted run (within 1e-4: the gradients are summed in another order, so the weights are
close, not bit-equal). A killed launcher takes torchrun and its workers with it."""

from __future__ import annotations

import time

import psutil
import pytest
from fault_runs import leftovers, losses, moai, start, weight_difference

STEPS = 6


def _args(workdir, out, *extra):
    return ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", workdir / "data",
            "--output-dir", out, "--max-steps", str(STEPS), "--batch-size", "2", "--global-batch", "8",
            "--logging-steps", "1", "--save-steps", "2", "--lr-scheduler", "constant",
            "--warmup-steps", "0", "--learning-rate", "1e-3", *extra]


def _workers_of(out) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(out / "run.yaml") in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _stopped(out) -> bool:
    for proc in _workers_of(out):
        try:
            if proc.status() == psutil.STATUS_STOPPED:
                return True
        except psutil.NoSuchProcess:
            pass
    return False


def _close(a, b):
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, STEPS + 1))
    worst = max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
    assert worst <= 1e-4, (a, b)


@pytest.mark.slow
def test_two_processes_resumed_with_one_and_one_resumed_with_two(workdir, tmp_path):
    one, two, back = tmp_path / "one", tmp_path / "two", tmp_path / "back"
    assert moai(_args(workdir, one)).code == 0

    # 2 processes, stopped inside rank 0 after the step-4 checkpoint; then the launcher is killed
    launcher, log = start(_args(workdir, two, "--nproc", "2"),
                          env={"MOAI_FAULT_STOP_AT": "checkpoint.after_rename#2"})
    deadline = time.time() + 300
    while not _stopped(two):
        assert launcher.is_alive() and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    launcher.kill()
    launcher.join()
    deadline = time.time() + 30
    while _workers_of(two) and time.time() < deadline:  # torchrun and workers die with it
        time.sleep(0.1)
    assert _workers_of(two) == [], "processes outlived their killed launcher"
    resumed = moai(_args(workdir, two, "--nproc", "1", "--resume", "auto"))
    assert resumed.code == 0 and "resuming from" in resumed.output, resumed.output
    _close(losses(one), losses(two))
    same, worst = weight_difference(one / "final_model" / "model.safetensors",
                                    two / "final_model" / "model.safetensors")
    assert worst < 1e-4 and leftovers(two) == []

    # 1 process killed after the step-4 checkpoint, resumed with 2
    assert moai(_args(workdir, back), kill_at="checkpoint.after_rename#2").killed
    resumed = moai(_args(workdir, back, "--nproc", "2", "--resume", "auto"))
    assert resumed.code == 0, resumed.output
    _close(losses(one), losses(back))
    assert leftovers(back) == []
