"""Shared inputs for the training tests: a tiny tokenizer trained on the embedded corpora,
pretraining documents, finance Q&A records and a prepared dataset (seq 64), built once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SEQ = 64


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    from moai_llm import corpora

    from embedded_rows import embedded_rows

    root = tmp_path_factory.mktemp("training")
    embedded_rows(root, vocab_size=600, seq_len=SEQ)  # root/tok, root/docs.jsonl, root/data
    with open(root / "qa.jsonl", "w", encoding="utf-8") as fh:
        for r in corpora.finance_qa("train"):
            fh.write(json.dumps({"input": r["input"], "output": r["output"]}, ensure_ascii=False) + "\n")
    return root


def moai_env() -> dict[str, str]:
    """Environment for `moai` subprocesses: one thread, offline, quiet transformers."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error")
    return env


@pytest.fixture(scope="session")
def pretrain_args():
    """`pretrain_args(workdir, out, steps)`: the arguments of a small tiny-preset run."""
    return _base_args


@pytest.fixture(scope="session")
def drop_flag():
    return without


@pytest.fixture(scope="session")
def subprocess_env():
    return moai_env()


def _base_args(workdir: Path, out: Path, steps: int = 6) -> list[str]:
    return ["pretrain", "--model", "tiny", "--tokenizer", str(workdir / "tok"),
            "--dataset", str(workdir / "data"), "--output-dir", str(out), "--max-steps", str(steps),
            "--batch-size", "2", "--gradient-accumulation-steps", "1", "--logging-steps", "1"]


def without(args: list[str], flag: str) -> list[str]:
    """`args` minus `flag` and its value."""
    i = args.index(flag)
    return args[:i] + args[i + 2:]
