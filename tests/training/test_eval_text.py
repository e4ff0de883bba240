"""`--eval-text`: bits per byte of held-out text during training (eval_bpb), before the first
step and every --eval-steps, the same figure `score_rows` gives the final model, the same with
2 processes as with 1; bad sources refused before anything is written."""

from __future__ import annotations

import json

import pytest
import yaml
from fault_runs import moai
from typer.testing import CliRunner

from moai_cli.app import app


@pytest.fixture(scope="module")
def held_out(workdir):
    """A dozen of the corpora's held-out documents (the quickstart's file, shortened)."""
    from moai_llm.eval.heldout import write_eval_files

    full = write_eval_files(workdir / "eval_files")["text"]
    short = workdir / "eval_files" / "heldout_short.jsonl"
    short.write_text("".join(full.read_text().splitlines(keepends=True)[::6]))
    return short


def _args(workdir, out, held_out, *extra):
    return ["pretrain", "--model", "tiny", "--tokenizer", str(workdir / "tok"), "--dataset",
            str(workdir / "data"), "--output-dir", str(out), "--max-steps", "6", "--batch-size", "2",
            "--global-batch", "4", "--logging-steps", "3", "--learning-rate", "3e-3",
            "--eval-text", str(held_out), "--eval-steps", "3", *extra]


def _bpb(out) -> dict[int, float]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["eval_bpb"] for r in lines if "eval_bpb" in r}


@pytest.fixture(scope="module")
def one(workdir, held_out):
    out = workdir / "eval-text-1"
    result = CliRunner().invoke(app, _args(workdir, out, held_out))
    assert result.exit_code == 0, result.output
    return out


def test_eval_bpb_before_the_first_step_and_every_eval_steps(one):
    bpb = _bpb(one)
    assert sorted(bpb) == [0, 3, 6]
    assert bpb[6] < bpb[0]  # it learns
    lines = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert not any("eval_loss" in r for r in lines)  # the text is the held-out set: no rows taken
    trained = [r for r in lines if "loss" in r]
    assert all("tokens_per_s_per_device" in r and 0 <= r["data_wait"] < 1 for r in trained)
    assert not any("mfu" in r for r in trained)  # no recorded peak for a CPU
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(one / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval_bpb")] == [0, 3, 6]
    assert (one / "loss.png").stat().st_size > 0


def test_the_last_eval_bpb_is_score_rows_on_the_final_model(one, workdir, held_out):
    from moai_llm.eval.scoring import score_rows
    from moai_llm.eval.text import prepare_eval_text
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer import load_tokenizer

    model = MoaiForCausalLM.from_pretrained(one / "final_model")
    rows = prepare_eval_text(str(held_out), load_tokenizer(one / "final_model"), seq_len=64)
    scores = score_rows(model, rows, micro_batch=2)
    assert round(scores["bits_per_byte"], 6) == _bpb(one)[6]


@pytest.mark.slow
def test_two_processes_give_the_eval_bpb_of_one(one, workdir, held_out, tmp_path):
    two = tmp_path / "two"
    run = moai(_args(workdir, two, held_out, "--nproc", "2"))
    assert run.code == 0, run.output
    a, b = _bpb(one), _bpb(two)
    assert sorted(a) == sorted(b)
    assert a[0] == b[0]  # the same initial weights, the same text: the same figure
    assert all(abs(a[s] - b[s]) <= 2e-6 for s in a), (a, b)  # gradients summed in another order


def test_eval_steps_is_derived_when_only_eval_text_is_given(workdir, held_out, tmp_path):
    out = tmp_path / "derived"
    args = _args(workdir, out, held_out)
    args = args[:args.index("--eval-steps")] + ["--max-steps", "20", "--logging-steps", "10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "run.yaml").read_text())
    assert spec["derived"]["eval_steps"]["value"] == 2
    assert "every tenth" in spec["derived"]["eval_steps"]["reason"]
    assert "eval_steps" not in spec["defaults"] and spec["given"]["flags"]["eval_text"] == [str(held_out)]
    assert sorted(_bpb(out)) == list(range(0, 21, 2))


@pytest.mark.parametrize("content,flags,says", [
    ("", [], "--eval-text"),
    ('{"text": "   "}\n', [], "no text to score"),
    ('{"body": "some text"}\n', ["--eval-text-column", "text"], "text"),
])
def test_a_bad_eval_text_is_refused_before_anything_is_written(workdir, tmp_path, content, flags, says):
    source = tmp_path / "held.jsonl"
    source.write_text(content)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, _args(workdir, out, source, *flags))
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not out.exists()
