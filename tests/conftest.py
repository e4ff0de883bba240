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
