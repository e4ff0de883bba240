"""Model folders the export tests write once per session.

- `moai_tok`: a moai tokenizer trained on the embedded ko/en/ja/zh corpora (vocab 3000), the
  way `moai tokenizer train` makes one;
- `qwen_tok`: a tokenizer built the way Qwen's is (tests/qwen_style.py: Qwen's split regex, NFC,
  specials after the vocabulary, Qwen3's thinking template), trained on the same text;
- `moai_model` / `qwen_model`: random Qwen3 folders on those tokenizers, with weights spread
  wide enough (init std 0.2) that greedy decoding is decided by clear margins, not by rounding;
- `stopping_model`: a model built to answer every chat turn with one word and then
  `<|im_end|>`, to check where generation stops;
- `adapter_dir`: a LoRA adapter (every linear layer, rank 4, random B) on `moai_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_texts import REPLY, training_texts


@pytest.fixture(scope="session")
def moai_tok(tmp_path_factory) -> Path:
    from moai_llm.tokenizer import train_tokenizer

    return train_tokenizer(training_texts(), tmp_path_factory.mktemp("moai_tok") / "tok", vocab_size=3000)


@pytest.fixture(scope="session")
def qwen_tok(tmp_path_factory) -> Path:
    from qwen_style import write_qwen_style_tokenizer

    return write_qwen_style_tokenizer(tmp_path_factory.mktemp("qwen_tok") / "tok", texts=training_texts(),
                                      vocab_size=3000)


def write_model(out: Path, tok_dir: Path, tie: bool = False, padded_rows: int = 0, seed: int = 0,
                sampling: bool = True) -> Path:
    """A random Qwen3 folder (hidden 64, 2 layers, 4 heads, 2 KV heads, init std 0.2)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    im_end, endoftext = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen3Config(vocab_size=len(tok) + padded_rows, hidden_size=64, intermediate_size=192,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=512, tie_word_embeddings=tie, initializer_range=0.2,
                         rope_theta=1_000_000.0, eos_token_id=im_end, bos_token_id=endoftext)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    if sampling:
        model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], do_sample=True,
                                                   temperature=0.6, top_p=0.95, top_k=20)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def moai_model(tmp_path_factory, moai_tok) -> Path:
    return write_model(tmp_path_factory.mktemp("moai_model") / "m", moai_tok)


@pytest.fixture(scope="session")
def qwen_model(tmp_path_factory, qwen_tok) -> Path:
    return write_model(tmp_path_factory.mktemp("qwen_model") / "m", qwen_tok, tie=True, padded_rows=37, seed=1)



@pytest.fixture(scope="session")
def stopping_model(tmp_path_factory, moai_tok) -> Path:
    """Answers REPLY, then <|im_end|>: the residual stream's dimensions 0 and 1 carry only the
    current token's embedding (no layer writes them); dimension 1 is set for every token except
    REPLY's and predicts REPLY, dimension 0 is set for REPLY and predicts <|im_end|>."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    out = write_model(tmp_path_factory.mktemp("stopping") / "m", moai_tok, sampling=False)
    tok = AutoTokenizer.from_pretrained(out)
    [reply] = tok(REPLY, add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    state = load_file(str(out / "model.safetensors"))
    emb, head = state["model.embed_tokens.weight"] * 0.05, state["lm_head.weight"] * 0.05
    emb[:, :2] = 0
    emb[:, 1] = 10.0
    emb[reply, 0], emb[reply, 1] = 10.0, 0.0
    head[:, :2] = 0
    head[reply, 1] = head[im_end, 0] = 3.0
    state["model.embed_tokens.weight"], state["lm_head.weight"] = emb, head
    for name in list(state):
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            state[name][:2] = 0
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, moai_model) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from moai_llm.adapters import save_adapter
    from moai_llm.training.lora import apply_lora

    base = AutoModelForCausalLM.from_pretrained(moai_model, dtype=torch.float32)
    peft_model = apply_lora(base, rank=4, alpha=8)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    save_adapter(peft_model, out, base_model=str(moai_model), tokenizer=moai_model)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    return out
