"""moai_llm/export/gguf_writer.py + tokenizer_meta.py: the GGUF read back with the gguf package.

Every hyperparameter, the whole vocabulary with types and merges, the special ids and the
template must be in the file, and every tensor must hold the model's weights (exactly in f32,
within the type's rounding in f16/bf16/q8_0).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from moai_llm.export.run import export_model


def field(reader: gguf.GGUFReader, key: str):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode("utf-8")
    return f.parts[-1].tolist()[0]


def tensors(reader: gguf.GGUFReader) -> dict[str, np.ndarray]:
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(data, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])
    return out


def test_moai_model_f32_holds_every_hyperparameter_token_and_weight(moai_model, tmp_path):
    out = export_model(moai_model, tmp_path / "m.gguf", quant="f32").output
    reader = gguf.GGUFReader(str(out))
    config = json.loads((moai_model / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(moai_model)
    assert field(reader, "general.architecture") == "qwen3"
    expect = {"qwen3.block_count": 2, "qwen3.embedding_length": 64, "qwen3.feed_forward_length": 192,
              "qwen3.attention.head_count": 4, "qwen3.attention.head_count_kv": 2, "qwen3.attention.key_length": 16,
              "qwen3.attention.value_length": 16, "qwen3.context_length": 512}
    assert {k: field(reader, k) for k in expect} == expect
    assert field(reader, "qwen3.rope.freq_base") == pytest.approx(1_000_000.0)
    assert field(reader, "qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    tokens = field(reader, "tokenizer.ggml.tokens")
    vocab = tok.get_vocab()
    assert len(tokens) == config["vocab_size"] and all(tokens[i] == t for t, i in vocab.items())
    types = field(reader, "tokenizer.ggml.token_type")
    assert [types[vocab[t]] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")] == [3] * 4
    assert types[vocab["a"]] == 1
    merges = field(reader, "tokenizer.ggml.merges")
    spec = json.loads((moai_model / "tokenizer.json").read_text())["model"]["merges"]
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in spec]
    im_end = vocab["<|im_end|>"]
    assert field(reader, "tokenizer.ggml.eos_token_id") == im_end  # a chat model ends its turns there
    assert field(reader, "tokenizer.ggml.eot_token_id") == im_end
    assert field(reader, "tokenizer.ggml.padding_token_id") == vocab["<|pad|>"]
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "tokenizer.chat_template") == tok.chat_template
    state = load_file(str(moai_model / "model.safetensors"))
    got = tensors(reader)
    assert len(got) == len(state)
    np.testing.assert_array_equal(got["token_embd.weight"], state["model.embed_tokens.weight"].numpy())
    np.testing.assert_array_equal(got["output.weight"], state["lm_head.weight"].numpy())
    np.testing.assert_array_equal(got["blk.1.attn_k_norm.weight"], state["model.layers.1.self_attn.k_norm.weight"].numpy())
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"], state["model.layers.0.mlp.down_proj.weight"].numpy())


@pytest.mark.parametrize(("quant", "tolerance"), [("f16", 1e-3), ("bf16", 8e-3), ("q8_0", 2e-2)])
def test_smaller_types_round_matrices_and_keep_norms_f32(moai_model, tmp_path, quant, tolerance):
    out = export_model(moai_model, tmp_path / "m.gguf", quant=quant).output
    reader = gguf.GGUFReader(str(out))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == quant.upper() and kinds["blk.0.attn_norm.weight"] == "F32"
    state = load_file(str(moai_model / "model.safetensors"))
    got = tensors(reader)["blk.0.ffn_up.weight"]
    want = state["model.layers.0.mlp.up_proj.weight"].numpy()
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


def test_tied_qwen_model_reuses_the_embedding_and_names_qwen2_pre(qwen_model, tmp_path):
    out = export_model(qwen_model, tmp_path / "q.gguf", quant="f32").output
    reader = gguf.GGUFReader(str(out))
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names
    assert field(reader, "tokenizer.ggml.pre") == "qwen2"
    tok = AutoTokenizer.from_pretrained(qwen_model)
    tokens = field(reader, "tokenizer.ggml.tokens")
    rows = json.loads((qwen_model / "config.json").read_text())["vocab_size"]
    assert len(tokens) == rows and tokens[-1] == f"[PAD{rows - 1}]"  # padded embedding rows
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[-1] == gguf.TokenType.UNUSED
    assert types[tok.convert_tokens_to_ids("<think>")] == gguf.TokenType.USER_DEFINED
    assert types[tok.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.convert_tokens_to_ids("<|im_end|>")


def test_yarn_scaling_and_bf16_source_are_written(moai_model, tmp_path):
    import shutil

    folder = tmp_path / "yarn"
    shutil.copytree(moai_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
    config.pop("rope_parameters", None)
    (folder / "config.json").write_text(json.dumps(config))
    reader = gguf.GGUFReader(str(export_model(folder, tmp_path / "y.gguf", quant="f16").output))
    assert field(reader, "qwen3.rope.scaling.type") == "yarn"
    assert field(reader, "qwen3.rope.scaling.factor") == pytest.approx(4.0)
    assert field(reader, "qwen3.rope.scaling.original_context_length") == 128


def test_non_finite_weights_are_refused_and_nothing_is_written(moai_model, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from moai_llm.errors import MoaiInputError

    folder = tmp_path / "nan"
    shutil.copytree(moai_model, folder)
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.1.mlp.up_proj.weight"][3, 5] = torch.nan
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MoaiInputError, match="up_proj.weight holds NaN"):
        export_model(folder, tmp_path / "out.gguf", quant="f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan"]
