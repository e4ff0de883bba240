"""Generation: greedy equals transformers' generate, the KV cache changes nothing, sampling
follows transformers' rules, streamed text is always complete UTF-8 and never special tokens."""

from __future__ import annotations

import pytest
import torch

from moai_llm.inference import (
    GenerationStats,
    SamplingParams,
    TextStream,
    generate_ids,
    stream_generate,
)
from moai_llm.inference.generation import apply_repetition_penalty, filter_top_k_top_p, sample_next

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=24)


def _prompt(tokenizer, text="안녕하세요, how are you? 😀"):
    text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _hf_generate(model_dir, ids, max_new_tokens, eos, **kwargs):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = reference.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=3, **kwargs)
    return out[0, len(ids):].tolist()


def test_greedy_with_cache_equals_without_cache_and_transformers_generate(loaded, model_dir):
    model, tokenizer, info = loaded
    ids = _prompt(tokenizer)
    cached = list(generate_ids(model, ids, GREEDY, info["stop_ids"], use_cache=True))
    uncached = list(generate_ids(model, ids, GREEDY, info["stop_ids"], use_cache=False))
    assert len(cached) > 5
    assert cached == uncached
    assert cached == _hf_generate(model_dir, ids, 24, info["stop_ids"])


def test_greedy_stops_at_a_stop_token_exactly_like_transformers(loaded, model_dir):
    model, tokenizer, _ = loaded
    ids = _prompt(tokenizer, "stop here")
    free = list(generate_ids(model, ids, GREEDY))
    stop = free[6]  # pretend the 7th greedy token ends the answer
    first = free.index(stop)
    stats = GenerationStats()
    stopped = list(generate_ids(model, ids, GREEDY, [stop], stats=stats))
    assert stopped == free[: first + 1]
    assert stats.stop_reason == "stop_token" and stats.tokens == first + 1
    assert stopped == _hf_generate(model_dir, ids, 24, [stop])


def test_repetition_penalty_greedy_matches_transformers(loaded, model_dir):
    model, tokenizer, info = loaded
    ids = _prompt(tokenizer, "repeat repeat repeat")
    params = SamplingParams(temperature=0, repetition_penalty=1.5, max_new_tokens=20)
    ours = list(generate_ids(model, ids, params, info["stop_ids"]))
    assert ours == _hf_generate(model_dir, ids, 20, info["stop_ids"], repetition_penalty=1.5)


def test_moai_model_and_transformers_qwen3_give_identical_greedy_answers(model_dir, loaded):
    modeling = pytest.importorskip("moai_llm.modeling")
    if not hasattr(modeling, "MoaiForCausalLM"):
        pytest.skip("moai_llm.modeling.MoaiForCausalLM is not built yet")
    from transformers import Qwen3ForCausalLM

    _, tokenizer, info = loaded
    ids = _prompt(tokenizer)
    moai = modeling.MoaiForCausalLM.from_pretrained(model_dir).eval()
    hf = Qwen3ForCausalLM.from_pretrained(model_dir).eval()
    assert list(generate_ids(moai, ids, GREEDY, info["stop_ids"])) == list(
        generate_ids(hf, ids, GREEDY, info["stop_ids"]))


def test_sampling_filters_match_transformers_warpers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(300) * 3
    seen = torch.tensor([5, 17, 17, 250])
    ours = apply_repetition_penalty(logits, seen, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(seen[None], logits[None].clone())[0]
    assert torch.equal(ours, theirs)
    for top_k, top_p in [(20, 1.0), (0, 0.8), (0, 0.3), (40, 0.9)]:
        expected = logits[None].clone()
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(filter_top_k_top_p(logits, top_k, top_p).isinf(), expected[0].isinf())


def test_sampling_is_greedy_at_temperature_zero_and_top_k_one_and_reproducible_with_a_seed():
    torch.manual_seed(1)
    logits = torch.randn(500)
    seen = torch.tensor([], dtype=torch.long)
    best = int(logits.argmax())
    assert sample_next(logits, seen, SamplingParams(temperature=0, repetition_penalty=1.0)) == best
    assert sample_next(logits, seen, SamplingParams(temperature=5, top_k=1, repetition_penalty=1.0)) == best

    def draws(seed):
        generator = torch.Generator().manual_seed(seed)
        params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.0)
        return [sample_next(logits, seen, params, generator) for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert len(set(draws(7))) > 3  # really sampling, not greedy


def test_seeded_generation_is_reproducible(loaded):
    model, tokenizer, info = loaded
    ids = _prompt(tokenizer)
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=16, seed=3)
    assert list(generate_ids(model, ids, params)) == list(generate_ids(model, ids, params))


@pytest.mark.parametrize("text", ["오늘 금리가 올랐습니다 😀🚀 café 你好、こんにちは", "✨" * 5 + "한국어"])
def test_text_stream_emits_only_complete_characters(loaded, text):
    _, tokenizer, _ = loaded
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 3  # multi-byte characters really are split over tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + stream.flush() == text
    # a character split over byte tokens comes out whole, once its last byte arrives
    assert any(piece == "" for piece in pieces)


def test_special_tokens_are_generated_but_never_shown(loaded, tokenizer_dir, tmp_path):
    from moai_llm.inference import load_for_chat

    from random_models import write_random_model

    folder = write_random_model(tmp_path / "m", tokenizer_dir, hidden_size=32, num_layers=1)
    model, tokenizer, info = load_for_chat(folder)
    with torch.no_grad():  # make <|im_start|> and <|pad|> likely, so sampling produces them
        model.lm_head.weight[[1, 3]] = model.lm_head.weight[5:7] * 0 + model.lm_head.weight.abs().max()
    ids = tokenizer("hello", add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=5.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                            max_new_tokens=60, seed=0)
    generated = list(generate_ids(model, ids, params, info["stop_ids"]))
    assert {1, 3} & set(generated)
    text = "".join(stream_generate(model, tokenizer, ids, params, info["stop_ids"]))
    assert "<|" not in text
    assert len(text) > 0


def test_stats_count_tokens_and_time(loaded):
    model, tokenizer, _ = loaded
    stats = GenerationStats()
    text = "".join(stream_generate(model, tokenizer, _prompt(tokenizer), GREEDY, stats=stats))
    assert stats.tokens == 24 and stats.stop_reason == "max_new_tokens"
    assert 0 < stats.ttft_s <= stats.total_s
    assert stats.tokens_per_s > 0
    assert "24 tokens" in stats.line() and "tok/s" in stats.line() and "TTFT" in stats.line()
    assert isinstance(text, str)


def test_generation_stops_at_the_context_length(loaded):
    model, tokenizer, _ = loaded
    ids = _prompt(tokenizer)
    stats = GenerationStats()
    out = list(generate_ids(model, ids, GREEDY, stats=stats, max_length=len(ids) + 5))
    assert len(out) == 5 and stats.stop_reason == "context"
