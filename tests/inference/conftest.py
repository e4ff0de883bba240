"""Tiny random Qwen3 model folders (real tokenizer, real weights file) shared by the chat tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def loaded(model_dir):
    from moai_llm.inference import load_for_chat

    return load_for_chat(model_dir)
