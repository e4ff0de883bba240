"""`moai dpo`: preference tuning of a model folder on chosen/rejected pairs, with each loss, on
one process and two, with LoRA; the reference's log-probs computed once by the launcher and
reused; a killed run resumes bit-identical; what it writes loads in stock transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moai_cli.app import app

PAIRS = [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"Maybe {2 * i + 1}, I think."}
         for i in range(24)]
MOAI = [sys.executable, "-m", "moai_cli"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (folder / "held_out.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS[:6]))
    return folder


def _args(model_dir, data, out, *extra, steps=3):
    return ["dpo", "--pretrained-model", str(model_dir), "--dataset", str(data), "--output-dir", str(out),
            "--max-steps", str(steps), "--seq-len", "128", "--batch-size", "2", "--gradient-accumulation-steps", "1",
            "--learning-rate", "1e-3", "--logging-steps", "1", *map(str, extra)]


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _run(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def prepared(model_dir, pairs, tmp_path_factory):
    """A first DPO run (sigmoid, --eval-pairs): its data folder is reused by the other tests."""
    out = tmp_path_factory.mktemp("dpo") / "sigmoid"
    _run(_args(model_dir, pairs / "pairs.jsonl", out, "--eval-pairs", pairs / "held_out.jsonl", "--eval-steps", 2,
               steps=4))
    return out


def test_dpo_trains_logs_rewards_and_writes_a_stock_model(prepared, model_dir):
    import yaml
    from transformers import AutoModelForCausalLM

    records = _records(prepared)
    steps = [r for r in records if "loss" in r]
    assert abs(steps[0]["loss"] - 0.693147) < 1e-5  # the policy starts as the reference: log 2
    assert steps[-1]["loss"] < steps[0]["loss"] and steps[-1]["rewards/margins"] > 0
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(steps[-1])
    evals = [r for r in records if "eval_pairs_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert evals[0]["eval_pairs_margin"] == 0.0 and evals[-1]["eval_pairs_margin"] > 0
    section = yaml.safe_load((prepared / "run.yaml").read_text())["preference"]
    assert section["loss"] == "sigmoid" and section["beta"] == 0.1 and section["num_pairs"] == len(PAIRS)
    assert section["reference"] == str(model_dir)
    assert (prepared / "data" / "reference" / f"{section['reference_key']}.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(prepared / "final_model")
    assert model.config.vocab_size > 0 and (prepared / "loss.png").is_file()


@pytest.mark.parametrize("loss", ["ipo", "simpo", "orpo"])
def test_each_loss_trains_from_the_prepared_pairs(prepared, model_dir, loss, tmp_path):
    out = tmp_path / loss
    _run(_args(model_dir, prepared / "data", out, "--loss", loss))
    steps = [r for r in _records(out) if "loss" in r]
    assert len(steps) == 3 and steps[-1]["loss"] < steps[0]["loss"], steps
    section = __import__("yaml").safe_load((out / "run.yaml").read_text())["preference"]
    assert section["loss"] == loss
    assert (section.get("reference") is None) == (loss in ("simpo", "orpo"))


def test_lora_dpo_uses_the_base_as_reference_and_writes_adapter_and_merged_model(prepared, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    _run(_args(model_dir, prepared / "data", out, "--lora-rank", 4))
    steps = [r for r in _records(out) if "loss" in r]
    assert abs(steps[0]["loss"] - 0.693147) < 1e-5  # adapter B = 0: the policy is the base
    assert (out / "final_adapter" / "adapter_config.json").is_file()
    AutoModelForCausalLM.from_pretrained(out / "final_model")


def test_the_reference_is_scored_once_and_reused(prepared, model_dir, tmp_path):
    stored = sorted((prepared / "data" / "reference").glob("*.safetensors"))
    before = [p.stat().st_mtime_ns for p in stored]
    result = _run(_args(model_dir, prepared / "data", tmp_path / "again"))
    assert "reference log-probs: scoring" not in result.output
    assert [p.stat().st_mtime_ns for p in stored] == before


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo", "orpo"])
def test_two_processes_match_one(prepared, model_dir, tmp_path, subprocess_env, loss):
    """2 gloo processes x 1 micro-batch and 1 process x 2: the same loss per step, for each loss
    (pairs, and ORPO's answer tokens, are counted over the global batch)."""
    def args(out):
        return _args(model_dir, prepared / "data", out, "--global-batch", "4", "--lr-scheduler", "constant",
                     "--warmup-steps", "0", "--loss", loss)

    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run(MOAI + _drop(args(one), "--gradient-accumulation-steps"), env=subprocess_env,
                        capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run(MOAI + _drop(args(two), "--gradient-accumulation-steps") + ["--nproc", "2"],
                        env=subprocess_env, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr[-2000:]
    a = [r["loss"] for r in _records(one) if "loss" in r]
    b = [r["loss"] for r in _records(two) if "loss" in r]
    assert len(a) == len(b) == 3 and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-4, (a, b)
    ma = [r["rewards/margins"] for r in _records(one) if "loss" in r]
    mb = [r["rewards/margins"] for r in _records(two) if "loss" in r]
    assert max(abs(x - y) for x, y in zip(ma, mb, strict=True)) <= 1e-4, (ma, mb)


def _drop(args, flag):
    i = args.index(flag)
    return args[:i] + args[i + 2:]


@pytest.mark.slow
def test_a_killed_dpo_run_resumes_bit_identical(prepared, model_dir, tmp_path):
    from fault_runs import losses, moai, weight_difference

    def args(out):
        return _args(model_dir, prepared / "data", out, "--save-steps", 2, steps=6)

    reference = tmp_path / "whole"
    assert moai(args(reference)).code == 0
    out = tmp_path / "killed"
    run = moai(args(out) + ["--resume", "auto"], kill_at="step.end#3")
    assert run.killed, run.output
    finish = moai(args(out) + ["--resume", "auto"])
    assert finish.code == 0, finish.output
    same, worst = weight_difference(reference / "final_model" / "model.safetensors",
                                    out / "final_model" / "model.safetensors")
    assert same, worst
    assert losses(out) == losses(reference)


def test_orpo_with_a_reference_is_refused_and_writes_nothing(prepared, model_dir, tmp_path):
    out = tmp_path / "refused"
    result = CliRunner().invoke(app, _args(model_dir, prepared / "data", out, "--loss", "orpo",
                                           "--reference", model_dir))
    assert result.exit_code == 2 and "reference-free" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_doctor_plans_a_dpo_step_as_an_sft_step():
    """Two sequences per pair packed in rows, no reference weights: the SFT step's plan."""
    def plan(mode):
        result = CliRunner().invoke(app, ["doctor", "--mode", mode, "--simulate", "1xRTX4090-24GB",
                                          "--model", "2b", "--seq-len", "1024", "--json"])
        assert result.exit_code in (0, 1), result.output
        return json.loads(result.stdout)["plan"]

    dpo, sft = plan("dpo"), plan("sft")
    assert dpo["micro_batch_size"] == sft["micro_batch_size"] and dpo["gradient_checkpointing"] == sft["gradient_checkpointing"]


def test_moai_chat_answers_with_the_dpo_model(prepared):
    result = CliRunner().invoke(app, ["chat", str(prepared), "--prompt", "What is 2 plus 2?",
                                      "--max-new-tokens", "4", "--temperature", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert "final_model" in result.output or json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_qlora_dpo_on_two_processes(prepared, model_dir, tmp_path, subprocess_env):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "two-qlora"
    args = _drop(_args(model_dir, prepared / "data", out, "--global-batch", "4", "--lora-rank", "4", "--lora-4bit",
                       "--nproc", "2"), "--gradient-accumulation-steps")
    r = subprocess.run(MOAI + args, env=subprocess_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [x for x in _records(out) if "loss" in x]
    assert len(steps) == 3 and steps[-1]["loss"] < steps[0]["loss"]
    assert __import__("yaml").safe_load((out / "run.yaml").read_text())["plan"]["world_size"] == 2
    assert (out / "final_adapter").is_dir() and (out / "final_model" / "model.safetensors").is_file()
