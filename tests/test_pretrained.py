"""Starting from someone else's model: a folder stock transformers saved (Qwen-style tokenizer,
padded embedding) is accepted as it is; hostile or broken folders are refused with one line,
before anything is loaded, and nothing in them is unpickled or run."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from qwen_style import write_qwen_style_model
from typer.testing import CliRunner

from moai_llm.errors import MoaiInputError
from moai_llm.pretrained import check_folder, load_model, load_tokenizer, resolve_pretrained


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return write_qwen_style_model(tmp_path_factory.mktemp("qwen_like") / "model", padded_rows=64)


def _variant(qwen_dir, tmp_path, edit_config=None):
    folder = tmp_path / "variant"
    shutil.copytree(qwen_dir, folder)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_stock_transformers_folder_is_accepted_with_what_it_carries(qwen_dir):
    found = resolve_pretrained(qwen_dir)
    assert found.source == "folder" and found.path == qwen_dir
    # Qwen-like: the embedding has padding rows beyond the tokenizer, special tokens come last.
    assert found.vocab_rows == found.tokenizer_size + 64
    ids = found.special_token_ids
    assert ids["eos_token"] == ids["<|im_end|>"] and ids["pad_token"] == ids["<|endoftext|>"]
    assert min(ids.values()) >= found.tokenizer_size - 5  # 3 specials + <think> </think> follow the BPE
    assert found.chat_template and found.tied
    assert found.generation_config["temperature"] == 0.6 and found.generation_config["top_k"] == 20
    assert "64 padding rows" in found.describe()


def test_its_weights_load_into_moai_model_unchanged(qwen_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen3ForCausalLM

    found = resolve_pretrained(qwen_dir)
    model = load_model(found)
    saved = load_file(str(qwen_dir / "model.safetensors"))
    assert type(model).__name__ == "MoaiForCausalLM"
    assert next(model.parameters()).dtype == torch.float32
    assert torch.equal(model.get_input_embeddings().weight, saved["model.embed_tokens.weight"])
    stock = Qwen3ForCausalLM.from_pretrained(qwen_dir, dtype=torch.float32, trust_remote_code=False)
    ids = torch.tensor([[1, 5, 9, found.special_token_ids["<|im_end|>"]]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, stock(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    tokenizer = load_tokenizer(found)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == found.special_token_ids["<|im_end|>"]
    assert "<think>" in tokenizer.chat_template


def test_a_llama_config_is_refused_naming_the_architecture(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path, lambda c: c.update(model_type="llama", architectures=["LlamaForCausalLM"]))
    with pytest.raises(MoaiInputError, match=r"architecture 'llama' \(LlamaForCausalLM\).*Qwen3"):
        resolve_pretrained(folder)


def test_pickled_weights_are_refused_and_never_unpickled(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"

    class Hostile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Hostile()))
    with pytest.raises(MoaiInputError, match=r"only pickled weights \(pytorch_model.bin\)"):
        resolve_pretrained(folder)
    assert not marker.exists()


def test_a_truncated_safetensors_file_is_named(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(MoaiInputError, match=r"model.safetensors is damaged or incomplete"):
        resolve_pretrained(folder)


def test_a_missing_shard_is_named(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MoaiInputError, match="model-00002-of-00002.safetensors"):
        resolve_pretrained(folder)


def test_bad_config_json_is_named(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path)
    (folder / "config.json").write_text('{"model_type": "qwen3", ')
    with pytest.raises(MoaiInputError, match=r"config.json: not valid JSON"):
        resolve_pretrained(folder)


def test_config_and_weights_that_disagree_are_refused(qwen_dir, tmp_path):
    folder = _variant(qwen_dir, tmp_path, lambda c: c.update(vocab_size=c["vocab_size"] + 1))
    with pytest.raises(MoaiInputError, match=r"vocab_size \d+ but the embedding in the weights has \d+ rows"):
        resolve_pretrained(folder)
    folder2 = _variant(qwen_dir, tmp_path / "untied", lambda c: c.update(tie_word_embeddings=False))
    with pytest.raises(MoaiInputError, match="no lm_head.weight"):
        resolve_pretrained(folder2)


def test_custom_code_is_refused_unless_trusted(qwen_dir, tmp_path):
    auto_map = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    folder = _variant(qwen_dir, tmp_path, lambda c: c.update(auto_map=auto_map))
    (folder / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(MoaiInputError, match=r"auto_map: modeling_evil.EvilForCausalLM.*--trust-remote-code"):
        resolve_pretrained(folder)
    trusted = resolve_pretrained(folder, trust_remote_code=True)
    model = load_model(trusted)  # moai's own Qwen3 class: the folder's file still never runs
    assert type(model).__name__ == "MoaiForCausalLM"


def test_a_hub_name_offline_is_one_line_naming_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MoaiInputError, match=r"--pretrained-model Qwen/Qwen3-0.6B: no such local folder, and the "
                                             r"hub model cannot be downloaded \(HF_HUB_OFFLINE is set\)"):
        resolve_pretrained("Qwen/Qwen3-0.6B", cache_dir=tmp_path / "hub")
    assert not any((tmp_path / "hub").rglob("*.safetensors"))


def test_a_hub_name_in_the_cache_resolves_offline(qwen_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--acme--qwen-like"
    shutil.copytree(qwen_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    found = resolve_pretrained("acme/qwen-like", cache_dir=tmp_path / "hub")
    assert found.source == "hub" and found.path == repo / "snapshots" / ("0" * 40)
    assert found.vocab_rows == check_folder(qwen_dir).vocab_rows


def test_not_a_folder_nor_a_hub_name(tmp_path):
    with pytest.raises(MoaiInputError, match="no such folder"):
        resolve_pretrained(tmp_path / "missing" / "deep" / "path")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MoaiInputError, match="is a file"):
        resolve_pretrained(tmp_path / "file.txt")


def test_moai_chat_loads_it_and_generates(qwen_dir):
    from moai_cli.app import app

    result = CliRunner().invoke(app, ["chat", str(qwen_dir), "--prompt", "hello", "--json", "--temperature", "0",
                                      "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == str(qwen_dir) and report["tokens"] == 6
    tokenizer = load_tokenizer(resolve_pretrained(qwen_dir))
    # The folder's own (Qwen3-style) template, thinking off as moai's SFT trains by default.
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           tokenize=False, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert report["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_moai_chat_names_an_unreachable_hub_model(monkeypatch):
    from moai_cli.app import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["chat", "acme/not-downloaded", "--prompt", "hi"])
    assert result.exit_code == 2
    assert "error: acme/not-downloaded: no such local folder, and the hub model cannot be downloaded" \
        in result.stderr.replace("\n", " ")


def test_moai_chat_refuses_a_truncated_folder_with_exit_2(qwen_dir, tmp_path):
    from moai_cli.app import app

    folder = _variant(qwen_dir, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    result = CliRunner().invoke(app, ["chat", str(folder), "--prompt", "hi"])
    assert result.exit_code == 2 and "model.safetensors is damaged or incomplete" in result.stderr
