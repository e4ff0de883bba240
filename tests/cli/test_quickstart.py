"""`moai quickstart --tiny`: every stage runs through the real code, offline, and the report
says where everything went and what to run next."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_quickstart_tiny_runs_every_stage(tmp_path):
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "moai_cli", "quickstart", "--tiny", "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("[1/6] tokenizer", "[2/6] data", "[3/6] pretrain", "[4/6] sft", "[5/6] chat",
                  "[6/6] eval"):
        assert stage in r.stdout + r.stderr
    assert "bits per byte (before → after pretraining" in r.stdout
    assert "finance multiple choice" in r.stdout
    assert "moai chat" in r.stdout and "quickstart done" in r.stdout
    # how long it will take, from steps timed on this machine, is said before anything runs
    said = r.stderr.index("this machine:")
    assert said < r.stderr.index("[1/6] tokenizer") and "should take about" in r.stderr[said:]
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert (out / "pretrain" / "final_model" / "model.safetensors").is_file()
    assert (out / "sft" / "final_model" / "generation_config.json").is_file()
    assert (out / "pretrain" / "loss.png").is_file()
    losses = [json.loads(x)["loss"] for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert losses[-1] < losses[0]


def test_quickstart_json_report(tmp_path):
    from typer.testing import CliRunner

    from moai_cli.app import app

    out = tmp_path / "qs"
    result = CliRunner().invoke(app, ["quickstart", "--tiny", "-o", str(out), "--max-steps", "4",
                                      "--sft-steps", "2", "--question", "카드 연회비란?", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["question"] == "카드 연회비란?"
    assert report["final_model"].endswith("sft/final_model")
    assert set(report["timings"]) >= {"tokenizer_s", "pretrain_s", "sft_s", "chat_s", "eval_s", "total_s"}
    # held-out text scored by the pretraining run itself, before its first step and after its last
    lines = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    bpb = [(r["step"], r["eval_bpb"]) for r in lines if "eval_bpb" in r]
    assert [s for s, _ in bpb] == [0, 4] and report["heldout_bpb"] == [bpb[0][1], bpb[-1][1]]
    # the run's step counts were its own: the next --tiny run in this process starts from TINY's
    from moai_llm.quickstart import TINY

    assert (TINY.pretrain_steps, TINY.sft_steps) == (8, 4)
    assert bpb[-1][1] < bpb[0][1]
    # the finance multiple-choice table, base against sft (lm-eval is installed here)
    tasks = report["tasks"]
    assert tasks["columns"] == ["metric", "base (pretrain)", "sft"]
    assert [row[0] for row in tasks["rows"]] == ["local_finance_mc acc, 0-shot",
                                                 "local_finance_mc acc_norm, 0-shot"]
    assert all(0.0 <= float(v.split(" ± ")[0]) <= 1.0 for row in tasks["rows"] for v in row[1:])


def test_without_lm_eval_the_skip_line_keeps_its_install_command(tmp_path, monkeypatch, capsys):
    """Rich reads `[eval]` as a style tag and drops it: the printed advice must be whole."""
    import importlib.util

    from moai_llm import quickstart

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    result = quickstart._task_table(tmp_path, tmp_path, tmp_path / "mc.jsonl", tmp_path / "eval")
    assert "pip install -e '.[eval]'" in result["skipped"]
    assert "pip install -e '.[eval]'" in capsys.readouterr().err


def test_the_estimate_comes_from_steps_timed_here():
    from moai_llm.quickstart import TINY, estimate_seconds

    step, total = estimate_seconds(TINY, probe_steps=2)
    assert step > 0 and total == pytest.approx(step * (TINY.pretrain_steps + TINY.sft_steps))


def test_the_default_install_has_what_the_quickstart_shows():
    """The README's one setup command (`pip install -e .` inside scripts/setup.sh) must bring
    lm-evaluation-harness: without it the quickstart skips its finance multiple-choice table."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert any(dep.replace("-", "_").startswith("lm_eval") for dep in project["dependencies"])
    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup.sh").read_text()
    assert 'pip install -q -e ".${extras}"' in setup  # no extra needed without --dev
