"""Memory and disk, checked against the plan before anything is allocated or written, and a
disk that fills while saving: the partial save is removed, exit 2 says how much is needed and
free, and `--resume auto` continues from the last complete checkpoint once there is room."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal

import pytest
from fault_runs import leftovers, problems, start, wait_stopped, weight_difference
from faults import small_disk
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.config import MoaiConfig
from moai_llm.errors import NotEnoughMemoryError
from moai_llm.hardware.fit import estimate_for, need_bytes, usable_bytes
from moai_llm.hardware.memory import ModelShape
from moai_llm.hardware.plan import Plan
from moai_llm.training.launcher.guards import check_memory


def _need(shape, plan, micro=None):
    return need_bytes(estimate_for(shape, plan, micro), plan.device == "cuda")


def test_a_micro_batch_that_cannot_fit_is_refused_with_the_largest_that_does():
    config = MoaiConfig.from_preset("tiny")
    shape = ModelShape.from_config(config)
    plan = Plan(seq_len=256, micro_batch_size=4096, device_memory_bytes=4 * 2**30)
    with pytest.raises(NotEnoughMemoryError) as err:
        check_memory(plan, config)
    largest, budget = err.value.largest, usable_bytes(plan.device_memory_bytes, False)
    assert err.value.flag == "--batch-size" and 1 <= largest < 4096
    assert _need(shape, plan, largest) <= budget < _need(shape, plan, largest + 1)
    check_memory(dataclasses.replace(plan, micro_batch_size=largest), config)  # that one passes


def test_a_sequence_that_cannot_fit_even_one_row_is_refused_with_the_longest_that_does():
    config = MoaiConfig(**{**MoaiConfig.from_preset("tiny").to_dict(), "max_position_embeddings": 131072})
    shape = ModelShape.from_config(config)
    plan = Plan(seq_len=100_000, micro_batch_size=1, device="cuda", precision="bf16",
                device_memory_bytes=24 * 2**30, gradient_checkpointing=True)
    with pytest.raises(NotEnoughMemoryError) as err:
        check_memory(plan, config)
    assert err.value.flag == "--seq-len" and "GPU memory less a 8% margin" in str(err.value)
    longest, budget = err.value.largest, usable_bytes(plan.device_memory_bytes, True)
    at = lambda n: _need(shape, dataclasses.replace(plan, seq_len=n), 1)  # noqa: E731
    assert at(longest) <= budget < at(longest + 1)


def test_dry_run_shows_the_plan_and_its_warning_instead_of_refusing(workdir, pretrain_args, tmp_path):
    args = pretrain_args(workdir, tmp_path / "dry", 2) + ["--dry-run"]
    args[args.index("--batch-size") + 1] = "10000000"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# warning: micro batch 10000000 is predicted not to fit (largest that fits:" in result.output


def _run(workdir, out, steps, save_steps, *extra):
    return ["pretrain", "--model", "tiny", "--tokenizer", str(workdir / "tok"), "--dataset", str(workdir / "data"),
            "--output-dir", str(out), "--max-steps", str(steps), "--batch-size", "2",
            "--gradient-accumulation-steps", "1", "--logging-steps", "1", "--save-steps", str(save_steps),
            "--save-total-limit", "1", *extra]


def test_a_disk_too_small_for_the_run_is_refused_before_anything_is_written(workdir, tmp_path):
    with small_disk(tmp_path / "disk", "2500k") as disk:  # one checkpoint fits, the whole run does not
        out = disk / "run"
        result = CliRunner().invoke(app, _run(workdir, out, 4, 2))
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.output
        text = " ".join(result.output.split())
        assert "kept checkpoint + the one being written" in text and "need" in text
        assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def _fill(disk, keep: int = 4096) -> None:
    """Fill `disk` with a ballast file until `keep` bytes are left."""
    free = shutil.disk_usage(disk).free
    with open(disk / "ballast", "wb") as f:
        f.write(b"\0" * max(0, free - keep))


@pytest.mark.parametrize("what, stop_at, steps", [("checkpoint", "checkpoint.begin#2", 4),
                                                  ("final_model", "final.begin", 2)])
def test_a_disk_that_fills_while_saving(workdir, tmp_path, what, stop_at, steps):
    """The run starts with room for everything; another process then fills the disk while it
    trains: the save that meets the full disk is removed, exit 2 says so, and once there is
    room again `--resume auto` ends bit-equal to a run that never met a full disk."""
    reference = tmp_path / "reference"
    assert CliRunner().invoke(app, _run(workdir, reference, steps, 2)).exit_code == 0
    with small_disk(tmp_path / "disk", "16m") as disk:
        out = disk / "run"
        proc, log = start(_run(workdir, out, steps, 2), env={"MOAI_FAULT_STOP_AT": stop_at})
        try:
            wait_stopped(proc)
            _fill(disk)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.join(120)
        output = log.read_text()
        assert proc.exitcode == 2, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in output
        named = "checkpoints/step-4" if what == "checkpoint" else "final_model"
        assert f"{named}: the disk is full (the partial output was removed); it needs about" in \
            " ".join(output.split())
        assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]
        assert leftovers(out) == [] and problems(out) == [] and not (out / "final_model").exists()
        (disk / "ballast").unlink()
        result = CliRunner().invoke(app, _run(workdir, out, steps, 2, "--resume", "auto"))
        assert result.exit_code == 0, result.output
        same, worst = weight_difference(reference / "final_model" / "model.safetensors",
                                        out / "final_model" / "model.safetensors")
        assert same, worst
        assert leftovers(out) == []
