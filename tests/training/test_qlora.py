"""QLoRA (`--lora-4bit`): LoRA over a base loaded in nf4 through bitsandbytes, on this CPU, in
pretrain, sft and dpo; it resumes exactly; final_adapter/ and a merged fp32 final_model/ that
stock transformers loads (no quantization config left in it)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moai_cli.app import app

pytest.importorskip("bitsandbytes")

QA = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(16)]


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    (folder / "text.jsonl").write_text("".join(json.dumps({"text": f"{r['question']} {r['answer']}"}) + "\n"
                                               for r in QA))
    return folder


def _args(mode, model_dir, data, out, *extra, steps=4):
    return [mode, "--pretrained-model", str(model_dir), "--dataset", str(data), "--output-dir", str(out),
            "--max-steps", str(steps), "--seq-len", "128", "--batch-size", "2", "--gradient-accumulation-steps", "1",
            "--learning-rate", "3e-3", "--logging-steps", "1", "--lora-rank", "4", "--lora-4bit", *map(str, extra)]


def _losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("mode", ["sft", "pretrain"])
def test_a_4bit_base_trains_and_writes_adapter_and_a_stock_merged_model(mode, model_dir, qa, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / mode
    data = qa / ("qa.jsonl" if mode == "sft" else "text.jsonl")
    result = CliRunner().invoke(app, _args(mode, model_dir, data, out))
    assert result.exit_code == 0, result.output
    losses = _losses(out)
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    plan = __import__("yaml").safe_load((out / "run.yaml").read_text())["plan"]
    assert plan["lora"]["frozen_dtype"] == "nf4"
    assert (out / "final_adapter" / "adapter_config.json").is_file()
    config = json.loads((out / "final_model" / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(out / "final_model")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    moved = [n for n, p in merged.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert moved and all("proj" in n for n in moved)  # the adapter folded into the Linears only


def test_the_run_holds_linear4bit_layers(model_dir):
    """What --lora-4bit loads: the decoder's Linears as bitsandbytes Linear4bit (nf4), lm_head not."""
    from moai_llm.hardware.plan import Plan
    from moai_llm.training.resolved import BaseModel
    from moai_llm.training.settings import TrainSettings
    from moai_llm.training.worker.model_setup import build_model

    base = BaseModel(str(model_dir), str(model_dir), None, None, 0)
    model = build_model(TrainSettings(lora_4bit=True, lora_rank=4), None, None, Plan(seq_len=64), base)
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert kinds["model.layers.0.self_attn.q_proj"] == "Linear4bit"
    assert kinds["lm_head"] == "Linear"


@pytest.mark.slow
def test_a_killed_qlora_dpo_run_resumes_bit_identical(model_dir, tmp_path):
    from fault_runs import losses, moai, weight_difference

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": r["question"], "chosen": r["answer"],
                                         "rejected": f"Perhaps {i * 3 + 1}."}) + "\n" for i, r in enumerate(QA)))

    def args(out):
        return _args("dpo", model_dir, pairs, out, "--save-steps", 2, steps=6)

    whole, out = tmp_path / "whole", tmp_path / "killed"
    done = moai(args(whole))
    assert done.code == 0, done.output
    run = moai(args(out) + ["--resume", "auto"], kill_at="step.end#3")
    assert run.killed, run.output
    finish = moai(args(out) + ["--resume", "auto"])
    assert finish.code == 0, finish.output
    for name in ("final_adapter/adapter_model.safetensors", "final_model/model.safetensors"):
        same, worst = weight_difference(whole / name, out / name)
        assert same, (name, worst)
    assert losses(out) == losses(whole)
