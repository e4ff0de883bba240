"""Fault injection: a run killed with SIGKILL again and again, at seeded moments inside
checkpoint writes and the final save and at a random moment from outside, and resumed each
time with `--resume auto`, ends with exactly the weights of an uninterrupted run (fp32, CPU:
every tensor torch.equal), the same checkpoints and metrics, and nothing left over.

The runs are real processes killed with a real SIGKILL (fault_runs.py forks them from a warm
server). benchmarks/bench_faults.py is the long version (many seeds, more kills)."""

from __future__ import annotations

import random

import pytest
from fault_runs import leftovers, losses, moai, pick_kill, problems, weight_difference

STEPS, SAVE, KEEP = 8, 2, 2


def _args(workdir, out, steps=STEPS, *extra):
    return ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", workdir / "data",
            "--output-dir", out, "--max-steps", str(steps), "--batch-size", "2",
            "--gradient-accumulation-steps", "1", "--logging-steps", "1", "--save-steps", str(SAVE),
            "--save-total-limit", str(KEEP), *extra]


def _lines(out):
    try:
        return (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []


def _snapshot(out):
    return {str(p.relative_to(out)): (None if p.is_dir() else p.read_bytes()) for p in sorted(out.rglob("*"))}


@pytest.fixture(scope="module")
def reference(workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "reference"
    done = moai(_args(workdir, out))
    assert done.code == 0, done.output
    return out


@pytest.mark.slow
def test_a_run_killed_five_times_ends_as_if_never_killed(workdir, reference, tmp_path):
    out = tmp_path / "killed"
    rng = random.Random(10)
    # from outside, while the fresh run trains a step it has not logged yet
    logged = rng.randint(1, STEPS - 3)
    outside = moai(_args(workdir, out) + ["--resume", "auto"], kill_when=lambda: len(_lines(out)) >= logged)
    assert outside.killed, outside.output
    killed_at = []
    for where in ["checkpoint", "checkpoint", "step", "final"]:  # then K = 1..4 at seeded points
        spec = pick_kill(rng, out, STEPS, SAVE, KEEP, where)
        run = moai(_args(workdir, out) + ["--resume", "auto"], kill_at=spec)
        assert run.killed, (spec, run.output)
        killed_at.append(spec)
        assert problems(out) == [], (spec, problems(out))
        if len(killed_at) > 1:  # the killed process held the lock: the next one took it over
            assert "taking over the lock" in run.output, run.output
    assert any(s.startswith("checkpoint.") for s in killed_at) and killed_at[-1].startswith("final."), killed_at
    finish = moai(_args(workdir, out) + ["--resume", "auto"])
    assert finish.code == 0, (killed_at, finish.output)

    same, worst = weight_difference(reference / "final_model" / "model.safetensors",
                                    out / "final_model" / "model.safetensors")
    assert same, (killed_at, worst)
    assert losses(out) == losses(reference)  # metrics.jsonl reads as one clean run
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == sorted(p.name for p in (reference / "checkpoints").iterdir())
    for name in ckpts:
        assert (out / "checkpoints" / name / "trainer_state.json").read_text() == \
            (reference / "checkpoints" / name / "trainer_state.json").read_text()
    assert leftovers(out) == [] and problems(out) == []

    before = _snapshot(out)
    again = moai(_args(workdir, out) + ["--resume", "auto"])
    assert again.code == 0 and "complete" in again.output and "nan" not in again.output, again.output
    assert _snapshot(out) == before  # final_model/, metrics.jsonl, run.yaml: untouched


@pytest.mark.slow
def test_raising_max_steps_continues_and_a_kill_between_the_final_renames_is_survived(workdir, tmp_path):
    """A finished run continued to a higher --max-steps (constant schedule: the schedule does
    not depend on --max-steps, so the result is exact), killed with the old final_model/ set
    aside and the new one not yet in place."""
    constant = ["--lr-scheduler", "constant", "--warmup-steps", "0"]
    straight, continued = tmp_path / "straight", tmp_path / "continued"
    assert moai(_args(workdir, straight, 6, *constant)).code == 0
    assert moai(_args(workdir, continued, 4, *constant)).code == 0
    run = moai(_args(workdir, continued, 6, *constant, "--resume", "auto"), kill_at="final.between_renames")
    assert run.killed and "continuing from" in run.output and "learning-rate schedule" in run.output
    assert not (continued / "final_model").exists() and problems(continued) == []
    finish = moai(_args(workdir, continued, 6, *constant, "--resume", "auto"))
    assert finish.code == 0, finish.output
    same, worst = weight_difference(straight / "final_model" / "model.safetensors",
                                    continued / "final_model" / "model.safetensors")
    assert same, worst
    assert losses(continued) == losses(straight) and leftovers(continued) == []
