"""Loading for chat: which folder is loaded, and a clear input error for every bad folder."""

from __future__ import annotations

import json
import shutil

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.inference import load_for_chat, resolve_model_dir


def _copy(model_dir, target):
    shutil.copytree(model_dir, target)
    return target


def test_a_model_folder_loads_on_cpu_in_fp32_with_its_stop_tokens(loaded, model_dir):
    model, tokenizer, info = loaded
    assert info["path"] == str(model_dir) and info["source"] == "model"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.float32"
    assert not model.training
    vocab = tokenizer.get_vocab()
    assert {vocab["<|im_end|>"], vocab["<|endoftext|>"]} <= set(info["stop_ids"])
    assert info["chat_template"] is True
    assert info["context_length"] == 256
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


def test_a_run_folder_resolves_to_final_model(model_dir, tmp_path):
    run = tmp_path / "run"
    _copy(model_dir, run / "final_model")
    _copy(model_dir, run / "checkpoints" / "step-10")
    assert resolve_model_dir(run) == (run / "final_model", "final_model")


def test_without_final_model_the_newest_complete_checkpoint_is_used(model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _copy(model_dir, run / "checkpoints" / "step-9")
    _copy(model_dir, run / "checkpoints" / "step-100")
    incomplete = run / "checkpoints" / "step-200"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")  # weights never written: not a candidate
    assert resolve_model_dir(run) == (run / "checkpoints" / "step-100", "checkpoint")
    _, _, info = load_for_chat(run)
    assert info["source"] == "checkpoint" and info["path"].endswith("step-100")
    assert "checkpoints/step-100" in capsys.readouterr().err.replace("\n", "")  # said which


def test_a_folder_that_is_not_a_model_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MoaiInputError, match="not a model folder"):
        resolve_model_dir(tmp_path)
    with pytest.raises(MoaiInputError, match="no such folder"):
        resolve_model_dir(tmp_path / "missing")
    with pytest.raises(MoaiInputError, match="is a file"):
        resolve_model_dir(tmp_path / "notes.txt")


def test_pickled_bin_weights_are_refused(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "bin")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(MoaiInputError, match="safetensors only"):
        load_for_chat(folder)


def test_a_missing_tokenizer_is_an_input_error_unless_given(model_dir, tokenizer_dir, tmp_path):
    folder = tmp_path / "lonely"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, folder / name)
    with pytest.raises(MoaiInputError, match="no tokenizer"):
        load_for_chat(folder)
    _, tokenizer, info = load_for_chat(folder, tokenizer_path=tokenizer_dir)
    assert info["tokenizer_path"] == str(tokenizer_dir)


def test_a_tokenizer_larger_than_the_embedding_is_an_input_error(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "mismatch")
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] -= 10
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MoaiInputError, match="vocabulary mismatch") as error:
        load_for_chat(folder)
    assert f"{config['vocab_size']} embedding rows" in str(error.value)


def test_generation_config_supplies_sampling_defaults_and_eos(model_dir, tmp_path):
    from transformers import GenerationConfig

    folder = _copy(model_dir, tmp_path / "gen")
    GenerationConfig(do_sample=True, temperature=0.3, top_p=0.5, eos_token_id=[7, 2]).save_pretrained(folder)
    _, _, info = load_for_chat(folder)
    assert info["generation"]["temperature"] == 0.3 and info["generation"]["top_p"] == 0.5
    assert 7 in info["stop_ids"]


def test_trust_remote_code_is_passed_on_only_when_asked(model_dir, monkeypatch):
    import transformers

    seen: list[dict] = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(recording))
    load_for_chat(model_dir)
    assert seen and not any(call.get("trust_remote_code") for call in seen)
    seen.clear()
    load_for_chat(model_dir, trust_remote_code=True)
    assert seen[0]["trust_remote_code"] is True


@pytest.mark.gpu
def test_on_a_gpu_the_model_loads_in_bf16_and_generates(model_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from moai_llm.inference import SamplingParams, generate_ids

    model, tokenizer, info = load_for_chat(model_dir)
    assert info["device"] == "cuda" and info["dtype"] == "bfloat16"
    assert next(model.parameters()).dtype == torch.bfloat16
    ids = tokenizer("hello", add_special_tokens=False)["input_ids"]
    out = list(generate_ids(model, ids, SamplingParams(temperature=0.8, max_new_tokens=8, seed=0)))
    assert 1 <= len(out) <= 8
