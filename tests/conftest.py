"""Shared test setup: one thread (2-core CI swings 10x otherwise), offline hub, temp dirs."""

from __future__ import annotations

import os
import sys

# Shared builders for tests and benchmarks (`random_models.py`) live beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _loud_by_default():
    """`--json` commands run in-process (CliRunner) silence the library's output process-wide;
    every test starts with it on again, as every real `moai` process does."""
    from moai_llm.progress import set_quiet

    set_quiet(False)
    yield
    set_quiet(False)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A real byte-level BPE tokenizer of 400 tokens (random_models.write_tokenizer); test folders
    that need another one define their own `tokenizer_dir`."""
    from random_models import write_tokenizer

    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"), vocab_size=400)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer_dir):
    """A Qwen3 folder with random weights (hidden 64, 2 layers, context 256, seed 0) and that
    tokenizer: what the chat and eval tests load."""
    from random_models import write_random_model

    return write_random_model(tmp_path_factory.mktemp("model"), tokenizer_dir, hidden_size=64,
                              num_layers=2, context_length=256, seed=0)
