"""Starting from a base model someone else trained (training/adaptation.py): a folder saved by
stock transformers (tests/qwen_style.py: Qwen-style byte-level BPE, specials after the base
vocabulary, more embedding rows than tokens) trains through `moai pretrain` and `moai sft` and
comes out a stock Qwen3 folder with its tokenizer, chat template and generation config; a grown
tokenizer's rows start from their pieces; `--stages` trains the new rows alone first and resumes
exactly across the boundary; LoRA runs learn, checkpoint their adapter, resume exactly, and end
with final_adapter/ and a merged final_model/ that gives the adapter's logits."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from fault_runs import moai, weight_difference
from safetensors.torch import load_file
from typer.testing import CliRunner

from moai_cli.app import app

SEQ = 64
NEW = 80  # tokens the extended tokenizer adds (527 + 80 > the folder's 591 rows: rows grow to 640)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(root, the stock Qwen3 folder, its tokenizer extended by NEW finance tokens, prepared
    rows for each tokenizer)."""
    from qwen_style import write_qwen_style_model

    from moai_llm import corpora
    from moai_llm.data import prepare_dataset
    from moai_llm.progress import set_quiet
    from moai_llm.tokenizer.extend import extend_tokenizer

    set_quiet(True)
    root = tmp_path_factory.mktemp("base_models")
    folder = write_qwen_style_model(root / "qwen", padded_rows=64)
    finance = [r["input"] + " " + r["output"] for r in corpora.finance_qa("train")]
    extend_tokenizer(folder, finance, root / "ext", vocab_size=527 + NEW)
    with open(root / "docs.jsonl", "w", encoding="utf-8") as fh:
        for text in list(corpora.iter_texts("en"))[:60] + finance[:60]:
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    with open(root / "qa.jsonl", "w", encoding="utf-8") as fh:
        for r in list(corpora.finance_qa("train"))[:40]:
            fh.write(json.dumps({"input": r["input"], "output": r["output"]}, ensure_ascii=False) + "\n")
    prepare_dataset([str(root / "docs.jsonl")], folder, SEQ, root / "data-base")
    prepare_dataset([str(root / "docs.jsonl")], root / "ext", SEQ, root / "data-ext")
    set_quiet(False)
    return root


def _args(root, out, steps, *extra, tokenizer="ext"):
    tok = [] if tokenizer is None else ["--tokenizer", str(root / tokenizer)]
    data = root / ("data-base" if tokenizer is None else "data-ext")
    return ["pretrain", "--pretrained-model", str(root / "qwen"), *tok, "--dataset", str(data), "--output-dir",
            str(out), "--max-steps", str(steps), "--batch-size", "2", "--gradient-accumulation-steps", "1",
            "--logging-steps", "1", "--learning-rate", "1e-2", *map(str, extra)]


def _run(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_a_stock_transformers_folder_trains_and_stays_a_stock_folder(base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / "pretrain"
    _run(_args(base, out, 2, tokenizer=None))
    final = out / "final_model"
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=False)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.get_input_embeddings().weight.shape[0] == 591  # padding rows kept, not shrunk
    original, tok = AutoTokenizer.from_pretrained(base / "qwen"), AutoTokenizer.from_pretrained(final)
    assert len(tok) == len(original) == 527 and tok.chat_template == original.chat_template
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]) == [524, 522]  # after the base vocabulary
    generation = GenerationConfig.from_pretrained(final).to_dict()
    for key, value in GenerationConfig.from_pretrained(base / "qwen").to_dict().items():
        if key != "transformers_version":
            assert generation[key] == value, key  # the folder's own: top_k 20, temperature 0.6, ...
    # SFT on raw Q&A: the model's own (Qwen3, thinking) template makes the rows
    sft = tmp_path / "sft"
    _run(["sft", "--pretrained-model", str(final), "--dataset", str(base / "qa.jsonl"), "-o", str(sft),
          "--max-steps", "2", "--seq-len", "128", "--batch-size", "2", "--gradient-accumulation-steps", "1"])
    from moai_llm.data import load_prepared

    rows = load_prepared(sft / "data")
    labelled = [t for r in rows for t, y in zip(r["input_ids"], r["labels"], strict=True) if y != -100]
    every = [t for r in rows for t in r["input_ids"]]
    assert 524 in labelled and 0 < len(labelled) < len(every)  # answers and their <|im_end|>, no prompts
    assert AutoModelForCausalLM.from_pretrained(sft / "final_model").get_input_embeddings().weight.shape[0] == 591


@pytest.mark.parametrize("method", ["pieces", "mean"])
def test_new_rows_start_from_their_pieces_or_the_mean(base, method):
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.tokenizer.model_vocab import _backend, new_token_pieces
    from moai_llm.training.adaptation import grow, growth_for
    from moai_llm.training.settings import resolve_settings

    settings, _ = resolve_settings("pretrain", flags={"pretrained_model": str(base / "qwen"), "new_embeddings": method})
    folder = resolve_pretrained(base / "qwen")
    model = MoaiForCausalLM.from_pretrained(str(base / "qwen"))
    old = model.get_input_embeddings().weight.detach().clone()
    tokenizer = load_tokenizer(base / "ext")
    growth = growth_for(settings, len(tokenizer), folder)  # the launcher's decision
    grow(model, growth, folder, tokenizer)
    assert (growth.rows_before, growth.rows_after, growth.new_rows) == (591, 640, range(527, 607))
    weight = model.get_input_embeddings().weight.detach()
    assert torch.equal(weight[:527], old[:527])
    pieces = new_token_pieces(_backend(folder.tokenizer_dir), _backend(tokenizer), 527, 607)
    for token_id in (527, 560, 606):
        expected = old[pieces[token_id]].mean(0) if method == "pieces" else old.mean(0)
        torch.testing.assert_close(weight[token_id], expected)


@pytest.fixture(scope="module")
def staged(base, tmp_path_factory):
    """An uninterrupted staged run: 3 steps of new rows alone, then 3 of everything."""
    out = tmp_path_factory.mktemp("staged") / "run"
    done = moai(_args(base, out, 6, "--stages", "new-embeddings:3,all", "--save-steps", "3"))
    assert done.code == 0, done.output
    return out


def test_stage_one_trains_only_the_new_rows(base, staged):
    original = load_file(str(base / "qwen" / "model.safetensors"))
    step3 = load_file(str(staged / "checkpoints" / "step-3" / "model.safetensors"))
    final = load_file(str(staged / "final_model" / "model.safetensors"))
    embed = "model.embed_tokens.weight"
    assert torch.equal(step3[embed][:527], original[embed][:527])  # old rows bit-identical
    assert all(torch.equal(step3[k], original[k]) for k in original if k != embed)  # everything else too
    assert step3[embed].shape[0] == final[embed].shape[0] == 640
    growth = _derived(staged)["embedding_growth"]["value"]
    assert growth == {"base_tokens": 527, "tokens": 607, "rows_before": 591, "rows_after": 640, "method": "pieces"}
    assert not torch.allclose(final["model.norm.weight"], original["model.norm.weight"])  # stage 2 trains all


def _derived(out):
    import yaml

    return yaml.safe_load((out / "run.yaml").read_text())["derived"]


def test_new_rows_move_in_stage_one(base, staged):
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.training.adaptation import grow, growth_for
    from moai_llm.training.settings import resolve_settings

    settings, _ = resolve_settings("pretrain", flags={"pretrained_model": str(base / "qwen")})
    model = MoaiForCausalLM.from_pretrained(str(base / "qwen"))
    folder, tokenizer = resolve_pretrained(base / "qwen"), load_tokenizer(base / "ext")
    grow(model, growth_for(settings, len(tokenizer), folder), folder, tokenizer)
    start = model.get_input_embeddings().weight.detach()
    step3 = load_file(str(staged / "checkpoints" / "step-3" / "model.safetensors"))["model.embed_tokens.weight"]
    moved = (step3[527:607] - start[527:607]).abs().amax(1)
    assert (moved > 0).float().mean() > 0.5  # the new tokens seen in 3 steps have moved


def test_a_staged_run_killed_after_the_boundary_resumes_to_the_same_weights(base, staged, tmp_path):
    out = tmp_path / "killed"
    args = _args(base, out, 6, "--stages", "new-embeddings:3,all", "--save-steps", "3")
    killed = moai(args, kill_at="step.end#4")  # the first step of stage 2, after step-3 was saved
    assert killed.killed, killed.output
    resumed = moai(args + ["--resume", "auto"])
    assert resumed.code == 0, resumed.output
    same, diff = weight_difference(staged / "final_model" / "model.safetensors", out / "final_model" / "model.safetensors")
    assert same, diff


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    done = moai(_args(base, out, 6, "--lora-rank", "4", "--save-steps", "2"))
    assert done.code == 0, done.output
    return out


def test_a_lora_run_learns_and_ends_with_an_adapter_and_a_merged_stock_model(base, lora_run):
    from transformers import AutoModelForCausalLM

    from moai_llm.adapters import load_adapter_model
    from moai_llm.progress import set_quiet
    from moai_llm.training.lora import trainable_parameters

    losses = [json.loads(line)["loss"] for line in (lora_run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    adapter = lora_run / "final_adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.5 * (base / "qwen" / "model.safetensors").stat().st_size
    checkpoint = lora_run / "checkpoints" / "step-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    mask = 0o666 & ~_umask()
    for folder in (adapter, lora_run / "final_model", checkpoint):
        assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()} == {mask}, folder
    set_quiet(True)
    peft_model = load_adapter_model(adapter, merged=False)
    set_quiet(False)
    import yaml

    plan = yaml.safe_load((lora_run / "run.yaml").read_text())["plan"]
    trained = _adapted(base)  # as the run built it: grown, then LoRA on top
    assert trainable_parameters(trained) == trained.get_nb_trainable_parameters()[0] == plan["lora"]["trainable"]
    stock = AutoModelForCausalLM.from_pretrained(lora_run / "final_model", trust_remote_code=False)
    assert type(stock).__name__ == "Qwen3ForCausalLM" and stock.get_input_embeddings().weight.shape[0] == 640
    ids = torch.randint(0, 607, (2, 24), generator=torch.Generator().manual_seed(0))
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(stock(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=0, atol=1e-5)


def _adapted(base):
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.progress import set_quiet
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.training.adaptation import grow, growth_for, with_lora
    from moai_llm.training.settings import resolve_settings

    settings, _ = resolve_settings("pretrain", flags={"pretrained_model": str(base / "qwen"), "lora_rank": 4})
    model = MoaiForCausalLM.from_pretrained(str(base / "qwen"))
    set_quiet(True)
    folder, tokenizer = resolve_pretrained(base / "qwen"), load_tokenizer(base / "ext")
    growth = growth_for(settings, len(tokenizer), folder)
    grow(model, growth, folder, tokenizer)
    set_quiet(False)
    return with_lora(model, settings, growth)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_lora_run_killed_midway_resumes_to_the_same_adapter(base, lora_run, tmp_path):
    out = tmp_path / "killed"
    args = _args(base, out, 6, "--lora-rank", "4", "--save-steps", "2")
    killed = moai(args, kill_at="step.end#3")
    assert killed.killed, killed.output
    resumed = moai(args + ["--resume", "auto"])
    assert resumed.code == 0, resumed.output
    for name in ("final_adapter/adapter_model.safetensors", "final_model/model.safetensors"):
        same, diff = weight_difference(lora_run / name, out / name)
        assert same or diff <= 1e-6, (name, diff)


def test_moai_chat_answers_through_the_final_adapter(lora_run):
    result = CliRunner().invoke(app, ["chat", str(lora_run / "final_adapter"), "--prompt", "hello",
                                      "--max-new-tokens", "4", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert "LoRA adapter" in result.output or result.output.strip()


def test_a_launch_resolves_each_input_once_and_the_worker_reads_them(base, tmp_path):
    """The launcher resolves the pretrained folder, the tokenizer, the vocabulary growth, the
    model config, the schedule, the resume checkpoint and the plan once each per launch, and
    run.yaml records them; the worker (here in the same process) reads them and resolves none
    again. Counted on the real functions' code, however they are imported."""
    import sys

    import yaml

    from moai_llm import pretrained
    from moai_llm.hardware import planner
    from moai_llm.training import adaptation, schedule
    from moai_llm.training.launcher import inputs, resume

    watched = {"resolve_pretrained": pretrained.resolve_pretrained, "tokenizer_dir": inputs.tokenizer_dir,
               "growth_for": adaptation.growth_for, "model_config_for": inputs.model_config_for,
               "make_schedule": schedule.make_schedule, "resume.resolve": resume.resolve,
               "make_plan": planner.make_plan}
    codes = {f.__code__: name for name, f in watched.items()}
    out = tmp_path / "run"

    def launch(steps, *extra):
        counts = dict.fromkeys(watched, 0)

        def profile(frame, event, arg):
            if event == "call" and frame.f_code in codes:
                counts[codes[frame.f_code]] += 1

        sys.setprofile(profile)
        try:
            result = CliRunner().invoke(app, _args(base, out, steps, "--stages", "new-embeddings:1,all", *extra))
        finally:
            sys.setprofile(None)
        assert result.exit_code == 0, result.output
        return counts

    assert launch(2) == dict.fromkeys(watched, 1)
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["derived"]["embedding_growth"]["value"]["rows_after"] == 640
    assert Path(record["base_model"]["path"]).resolve() == (base / "qwen").resolve()
    assert record["schedule"]["total_steps"] == 2 and record["resume"] is None
    assert launch(3, "--resume", "auto") == dict.fromkeys(watched, 1)  # a resumed launch: once again
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["resume"]["step"] == 2 and record["schedule"]["total_steps"] == 3
