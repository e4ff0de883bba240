"""Tiny random Qwen3 folders (real tokenizer, real weights) and texts shared by the eval tests."""

from __future__ import annotations

import pytest

from random_models import write_random_model, write_tokenizer

DOCS = [
    "Hello, how are you today? I am fine, thank you.",
    "The interest rate rose by 0.25 percentage points this quarter.",
    "안녕하세요. 오늘 날씨가 정말 좋네요! 금리가 올랐습니다.",
    "こんにちは、元気ですか。今日はいい天気です。",
    "你好，今天天气很好。银行利率上升了。",
    "Emoji test: 🚀🌏✨ and accents: café, naïve, über.",
    "A longer document about savings: " + " ".join(f"month {i} saved {i * 7} won;" for i in range(30)),
    "x",
]


@pytest.fixture(scope="session")
def docs():
    return list(DOCS)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"), vocab_size=400)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer_dir):
    return write_random_model(tmp_path_factory.mktemp("model"), tokenizer_dir, hidden_size=64,
                              num_layers=2, context_length=256, seed=0)


@pytest.fixture(scope="session")
def moai_model(model_dir):
    from moai_llm.modeling import MoaiForCausalLM

    return MoaiForCausalLM.from_pretrained(model_dir).eval()
