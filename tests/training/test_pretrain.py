"""`moai pretrain` end to end on the tiny preset: what a run leaves behind and that it learns."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from moai_cli.app import app


@pytest.fixture(scope="module")
def run(workdir, pretrain_args):
    out = workdir / "run-pretrain"
    args = pretrain_args(workdir, out, steps=24) + [
        "--save-steps", "8", "--save-total-limit", "2", "--eval-steps", "12",
        "--learning-rate", "3e-3", "--warmup-steps", "0.1", "--lr-scheduler", "wsd", "--seed", "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result


def test_run_yaml_records_given_defaults_derived_and_plan_apart(run, workdir):
    from moai_llm.training.record import read_record

    out, _ = run
    spec = yaml.safe_load((out / "run.yaml").read_text())
    flags = spec["given"]["flags"]
    assert flags["max_steps"] == 24 and flags["seed"] == 3 and flags["lr_scheduler"] == "wsd"
    assert "seq_len" not in flags and "tokenizer" in flags  # what was typed, and only that
    assert spec["defaults"]["weight_decay"] == 0.1 and "max_steps" not in spec["defaults"]
    assert spec["derived"]["seq_len"] == {"value": 64, "reason": f"rows of the prepared dataset {workdir / 'data'}"}
    tok_size = spec["tokenizer"]["size"]
    assert spec["model_config"]["vocab_size"] == -(-tok_size // 64) * 64
    assert spec["derived"]["vocab_size"]["value"] == spec["model_config"]["vocab_size"]
    assert "tokenizer" in spec["derived"]["vocab_size"]["reason"]
    assert spec["plan"]["micro_batch_size"] == 2 and spec["plan"]["world_size"] == 1
    assert spec["plan"]["reasons"]["micro_batch_size"] == "2 (set by you)"
    assert spec["resume"] is None and spec["plan_retries"] == []
    # each setting is stored once: in given, defaults or derived, never in two of them
    sections = [set(flags) | set(spec["given"]["config"]), set(spec["defaults"]), set(spec["derived"])]
    assert all(not (a & b) for i, a in enumerate(sections) for b in sections[i + 1:])
    text = (out / "run.yaml").read_text()
    assert text.count("seq_len:") == 1
    record = read_record(out)
    assert record.settings().seq_len == 64 and record.plan().seq_len == 64


def test_keeps_the_last_checkpoints_as_qwen3_folders(run):
    from transformers import AutoModelForCausalLM

    out, _ = run
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-16", "step-24"]
    ckpt = out / "checkpoints" / "step-16"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.pt",
                 "scheduler.pt", "rng-rank0.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 16 and state["samples_consumed"] == 32
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_final_model_loads_in_stock_transformers_with_chat_stops(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out, _ = run
    final = out / "final_model"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    gen = GenerationConfig.from_pretrained(final)
    ids = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>", "<|pad|>"])
    assert gen.eos_token_id == ids[:2] and gen.pad_token_id == ids[2]
    assert model.config.vocab_size >= len(tok)
    assert next(model.parameters()).dtype == torch.float32  # fp32 master weights were saved
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    new = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert new.shape[1] > prompt["input_ids"].shape[1]


def test_metrics_tensorboard_and_loss_plot(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 25))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens"):
        assert key in train[0]
    assert "mfu" not in train[0]  # CPU: no peak FLOP/s to compare with
    assert [r["step"] for r in records if "eval_loss" in r] == [12, 24]
    assert train[-1]["lr"] < train[12]["lr"]  # WSD decay at the end
    assert list((out / "tb").glob("events.out.tfevents*"))
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_loss_falls(run):
    out, result = run
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in train if "loss" in r]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3
    assert "final_model" in result.output


def test_fused_adamw_and_no_whole_model_cast():
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.training.settings import TrainSettings
    from moai_llm.training.worker.model_setup import build_optimizer, optimizer_kind

    model = MoaiForCausalLM(MoaiConfig.from_preset("tiny"))
    opt = build_optimizer(model, TrainSettings(), torch.device("cpu"))
    assert optimizer_kind(opt) == "fused"
    decayed, plain = opt.param_groups
    assert all(p.ndim >= 2 for p in decayed["params"]) and plain["weight_decay"] == 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = torch.randint(0, 100, (1, 16))
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_the_model_is_built_with_the_plans_attention_backend(run):
    """plan.attention configures the model, new or from a folder: what the memory estimate
    assumed is what runs."""
    from moai_llm.config import MoaiConfig
    from moai_llm.hardware.plan import Plan
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.training.resolved import BaseModel
    from moai_llm.training.settings import TrainSettings
    from moai_llm.training.worker.model_setup import build_model

    out, _ = run
    plan = Plan(seq_len=64, attention="eager", loss_chunk_size=256)
    new = build_model(TrainSettings(), MoaiConfig.from_preset("tiny").to_dict(), None, plan)
    assert new.config._attn_implementation == "eager" and new.config.loss_chunk_size == 256
    folder = out / "final_model"
    base = BaseModel.of(resolve_pretrained(folder))  # as the launcher resolves it
    loaded = build_model(TrainSettings(pretrained_model=str(folder)), None, load_tokenizer(folder), plan, base)
    assert loaded.config._attn_implementation == "eager"
    sdpa = build_model(TrainSettings(), MoaiConfig.from_preset("tiny").to_dict(), None,
                       Plan(seq_len=64, attention="sdpa"))
    assert sdpa.config._attn_implementation == "sdpa"
