"""`moai quickstart --tiny`: every stage runs through the real code, offline, and the report
says where everything went and what to run next."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quickstart_tiny_runs_every_stage(tmp_path):
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "moai_cli", "quickstart", "--tiny", "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("[1/5] tokenizer", "[2/5] data", "[3/5] pretrain", "[4/5] sft", "[5/5] chat"):
        assert stage in r.stdout + r.stderr
    assert "moai chat" in r.stdout and "quickstart done" in r.stdout
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
    assert set(report["timings"]) >= {"tokenizer_s", "pretrain_s", "sft_s", "chat_s", "total_s"}
