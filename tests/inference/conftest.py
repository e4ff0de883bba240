"""Tiny random Qwen3 model folders (real tokenizer, real weights file) shared by the chat tests."""

from __future__ import annotations

import pytest

from random_models import write_random_model, write_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"), vocab_size=400)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer_dir):
    return write_random_model(tmp_path_factory.mktemp("model"), tokenizer_dir, hidden_size=64,
                              num_layers=2, context_length=256, seed=0)


@pytest.fixture(scope="session")
def loaded(model_dir):
    from moai_llm.inference import load_for_chat

    return load_for_chat(model_dir)
