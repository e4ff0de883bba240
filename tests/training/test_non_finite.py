"""Numbers that make sense or an error: float settings are finite and in range, a NaN/inf step
is skipped, counted and named, `--max-bad-steps` stops the run, and no weights holding NaN/inf
are ever written as a checkpoint or final_model/."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm import faults


def _invoke(args):
    return CliRunner().invoke(app, args)


@pytest.fixture
def nan_at(monkeypatch):
    """`nan_at("2,4")`: those steps' losses are NaN (MOAI_FAULT_NAN_AT) until the test ends."""
    def arm(steps: str) -> None:
        monkeypatch.setenv(faults.NAN_ENV, steps)
        faults.arm()

    yield arm
    monkeypatch.delenv(faults.NAN_ENV, raising=False)
    faults.arm()


@pytest.mark.parametrize("flag, value, says", [
    ("--max-grad-norm", "-1", "--max-grad-norm must be at least 0 (0: no clipping), got -1.0"),
    ("--learning-rate", "inf", "--learning-rate must be a finite number"),
    ("--weight-decay", "nan", "--weight-decay must be a finite number"),
    ("--warmup-steps", "nan", "--warmup-steps must be a finite number"),
    ("--min-lr-ratio", "1.5", "--min-lr-ratio must be at least 0 and at most 1, got 1.5"),
    ("--logging-steps", "0", "--logging-steps must be at least 1"),
    ("--max-bad-steps", "0", "--max-bad-steps must be at least 1"),
])
def test_a_float_flag_out_of_its_meaning_is_refused_before_anything_is_written(
        workdir, pretrain_args, tmp_path, flag, value, says):
    out = tmp_path / "run"
    result = _invoke(pretrain_args(workdir, out, 2) + [flag, value])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


def test_a_nan_step_is_skipped_named_and_counted(workdir, pretrain_args, tmp_path, nan_at):
    """Steps 2 and 4 give NaN losses (as an overflow would): each is skipped with a warning
    naming it, metrics count them, the other steps train, and the model written is finite."""
    import torch
    from safetensors.torch import load_file

    nan_at("2,4")
    out = tmp_path / "skip"
    result = _invoke(pretrain_args(workdir, out, 6))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "step 2: loss nan" in text and "step 4: loss nan" in text and "step skipped" in text
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] == 2
    final = load_file(str(out / "final_model" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in final.values())


def test_max_bad_steps_counts_every_bad_step_not_only_a_row(workdir, pretrain_args, tmp_path, nan_at):
    """Two NaN steps apart (never two in a row) reach --max-bad-steps 2: exit 1 naming the
    step, checkpoints kept, no final_model/."""
    nan_at("2,4")
    out = tmp_path / "stop"
    result = _invoke(pretrain_args(workdir, out, 6) + ["--max-bad-steps", "2", "--save-steps", "3"])
    assert result.exit_code == 1, result.output
    assert "step 4: the loss or gradient norm was NaN/inf at 2 steps (steps 2, 4" in \
        " ".join(result.output.split())
    assert (out / "checkpoints" / "step-3" / "model.safetensors").is_file()
    assert not (out / "final_model").exists()


def test_weights_that_turned_nan_are_never_written(workdir, tmp_path):
    """Settings that slip past the flags' checks (a NaN weight decay given to the library
    directly) make the weights NaN after a finite step: the loop refuses to write them."""
    from moai_llm.errors import MoaiRunError
    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import prepare_run
    from moai_llm.training.settings import resolve_settings
    from moai_llm.training.worker.loop import train

    s, sources = resolve_settings("pretrain", flags={
        "model": "tiny", "tokenizer": str(workdir / "tok"), "dataset": [str(workdir / "data")],
        "output_dir": str(tmp_path / "run"), "max_steps": 2, "micro_batch_size": 2,
        "gradient_accumulation_steps": 1, "nproc": 1})
    record = prepare_run(s, sources)
    resolved = record.resolved()
    broken = dataclasses.replace(resolved, settings=dataclasses.replace(resolved.settings, weight_decay=float("nan")))
    set_quiet(True)
    try:
        with pytest.raises(MoaiRunError, match=r"step 2: the weights hold NaN/inf values \(model\."):
            train(broken, show_progress=False)
    finally:
        set_quiet(False)
    assert not (tmp_path / "run" / "final_model").exists()
    assert not (tmp_path / "run" / "checkpoints" / "step-2").exists()


def test_max_grad_norm_zero_turns_clipping_off(workdir, pretrain_args, tmp_path):
    """0 means no clipping (as the help says): the same weights as a limit never reached."""
    import torch
    from safetensors.torch import load_file

    weights = []
    for norm in ("0", "1e9"):
        out = tmp_path / f"clip{norm}"
        result = _invoke(pretrain_args(workdir, out, 2) + ["--max-grad-norm", norm])
        assert result.exit_code == 0, result.output
        weights.append(load_file(str(out / "final_model" / "model.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_run_whose_every_step_was_skipped_is_not_done(workdir, pretrain_args, tmp_path, nan_at):
    """Fewer bad steps than --max-bad-steps, but no step trained: exit 1, no final_model/
    (it used to print "done: final loss nan" over the untouched model)."""
    nan_at("1,2,3")
    out = tmp_path / "none"
    result = _invoke(pretrain_args(workdir, out, 3))
    assert result.exit_code == 1, result.output
    assert "step 3: every step of this run (3) had a NaN/inf loss or gradient norm" in " ".join(result.output.split())
    assert not (out / "final_model").exists()
