"""Exports run in llama.cpp (llama-cpp-python, built from source) as the model runs in transformers.

- tokenization: ko/en/ja/zh held-out documents, code, emoji, digit-heavy text and ChatML with
  special tokens get the same ids from llama.cpp as from transformers, for a moai tokenizer
  (`llama-bpe`) and a Qwen-style one (`qwen2`);
- f32 and f16 GGUFs: logits within tolerance of transformers' and 32 greedy tokens equal;
- chat completion through the GGUF's own template stops at <|im_end|>;
- a LoRA adapter GGUF applied by llama.cpp to the base GGUF gives the merged model's logits, and
  so does the adapter folder exported merged;
- q4_k_m through llama.cpp's quantizer loads and keeps moai's keys.

Needs llama-cpp-python (the `llamacpp` extra, in `dev`): skipped with the reason otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_texts import REPLY, comparison_texts
from transformers import AutoModelForCausalLM, AutoTokenizer

from moai_llm.export.run import export_model

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'moai[llamacpp]')")

PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "금리가 오르면 채권 가격은? 2026년 기준"}]


def load(path, **kwargs):
    """The GGUF in llama.cpp, with an f32 KV cache (its default f16 cache would round attention
    inputs that transformers keeps in f32)."""
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, seed=0,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, **kwargs)


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding (no penalty or other processor from the folder's generation config)."""
    from transformers import GenerationConfig

    plain = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, repetition_penalty=1.0,
                             eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), generation_config=plain)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("which", ["moai_model", "qwen_model"])
def test_llama_cpp_tokenizes_exactly_as_transformers(which, request, tmp_path):
    folder = request.getfixturevalue(which)
    out = export_model(folder, tmp_path / "m.gguf", quant="f16").output
    llm = load(out, vocab_only=True)
    tok = AutoTokenizer.from_pretrained(folder)
    checked = 0
    for kind, texts in comparison_texts().items():
        for text in texts:
            want = tok(text, add_special_tokens=False)["input_ids"]
            got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert got == want, f"{which} {kind}: {text[:60]!r}"
            checked += 1
    assert checked >= 80  # every held-out document of the embedded corpora, and the special kinds


@pytest.mark.parametrize(("quant", "tolerance"), [("f32", 1e-3), ("f16", 3e-2)])
@pytest.mark.parametrize("which", ["moai_model", "qwen_model"])
def test_logits_and_32_greedy_tokens_match_transformers(which, quant, tolerance, request, tmp_path):
    folder = request.getfixturevalue(which)
    out = export_model(folder, tmp_path / "m.gguf", quant=quant).output
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True, return_dict=False)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    llm = load(out, logits_all=True)
    want, got = hf_logits(model, ids), llama_logits(llm, ids)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()
    assert llama_greedy(llm, ids, 32) == hf_greedy(model, ids, 32)


def test_chat_completion_stops_at_im_end(stopping_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(stopping_model)
    model = AutoModelForCausalLM.from_pretrained(stopping_model, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True, return_dict=False)
    with torch.no_grad():
        reply = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    assert tok.decode(reply[:1]) == REPLY and reply[1:] == [tok.convert_tokens_to_ids("<|im_end|>")]
    llm = load(export_model(stopping_model, tmp_path / "s.gguf", quant="f16").output)
    answer = llm.create_chat_completion(messages=PROMPT, temperature=0, max_tokens=8)["choices"][0]
    assert (answer["message"]["content"], answer["finish_reason"]) == (REPLY, "stop")


def test_lora_adapter_gguf_in_llama_cpp_equals_the_merged_model(moai_model, adapter_dir, tmp_path):
    from moai_llm.adapters import load_adapter_model

    base = export_model(moai_model, tmp_path / "base.gguf", quant="f32").output
    lora = export_model(adapter_dir, tmp_path / "lora.gguf", quant="f32", adapter_only=True).output
    merged_gguf = export_model(adapter_dir, tmp_path / "merged.gguf", quant="f32").output
    tok = AutoTokenizer.from_pretrained(moai_model)
    ids = tok.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True, return_dict=False)
    merged = load_adapter_model(adapter_dir, dtype=torch.float32).eval()
    want = hf_logits(merged, ids)
    plain = hf_logits(AutoModelForCausalLM.from_pretrained(moai_model, dtype=torch.float32).eval(), ids)
    assert np.abs(want - plain).max() > 0.1 * np.abs(want).max()  # the adapter changes the model
    scale = np.abs(want).max()
    with_adapter = llama_logits(load(base, logits_all=True, lora_path=str(lora)), ids)
    assert np.abs(with_adapter - want).max() <= 1e-3 * scale
    assert np.abs(llama_logits(load(merged_gguf, logits_all=True), ids) - want).max() <= 1e-3 * scale


def test_q4_k_m_goes_through_llama_cpps_quantizer(moai_model, tmp_path):
    import gguf

    out = export_model(moai_model, tmp_path / "q.gguf", quant="q4_k_m").output
    f16 = export_model(moai_model, tmp_path / "h.gguf", quant="f16").output
    reader = gguf.GGUFReader(str(out))
    assert "moai.export" in reader.fields
    assert reader.fields["general.file_type"].parts[-1][0] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert out.stat().st_size < f16.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.gguf", "q.gguf"]  # the 16-bit step is gone
    tok = AutoTokenizer.from_pretrained(moai_model)
    ids = tok.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True, return_dict=False)
    got = llama_logits(load(out, logits_all=True), ids)
    assert np.isfinite(got).all() and got.shape == (len(ids), len(tok))
