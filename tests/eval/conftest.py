"""Tiny random Qwen3 folders (real tokenizer, real weights) and texts shared by the eval tests."""

from __future__ import annotations

import pytest

from random_models import write_random_model

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
def moai_model(model_dir):
    from moai_llm.modeling import MoaiForCausalLM

    return MoaiForCausalLM.from_pretrained(model_dir).eval()


def make_run(root, tokenizer_dir, mode="pretrain", seq_len=64, steps=(10, 20), final=True, last_step=30):
    """A run folder as training writes it: run.yaml, checkpoints/step-N/, final_model/, metrics.jsonl."""
    import json

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text(yaml.safe_dump({  # the layout training writes (moai_run 2)
        "moai_run": 2, "mode": mode, "given": {"flags": {"max_steps": last_step}, "config": {}},
        "defaults": {"eval_steps": 0}, "derived": {"seq_len": {"value": seq_len, "reason": "the dataset's rows"}}}))
    for i, step in enumerate(steps):
        write_random_model(root / "checkpoints" / f"step-{step}", tokenizer_dir, hidden_size=32, num_layers=1,
                           context_length=128, seed=i + 1)
    if final:
        write_random_model(root / "final_model", tokenizer_dir, hidden_size=32, num_layers=1, context_length=128, seed=9)
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0}) + "\n" for s in range(5, last_step + 1, 5)))
    return root


@pytest.fixture(scope="session")
def run_factory():
    """`make_run` for tests that build runs of their own."""
    return make_run


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory, tokenizer_dir):
    return make_run(tmp_path_factory.mktemp("runs") / "pretrain", tokenizer_dir)
