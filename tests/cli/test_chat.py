"""`moai chat` without a terminal: --prompt, stdin, --json, flag aliases, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moai_cli.app import app

from random_models import write_random_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("chat_cli"), hidden_size=32, num_layers=1,
                              vocab_size=300, context_length=128)


def _greedy_answer(model_dir, text, max_new_tokens=12):
    from moai_llm.inference import ChatSession, SamplingParams, load_for_chat

    model, tokenizer, info = load_for_chat(model_dir)
    session = ChatSession(model, tokenizer, info,
                          params=SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    return "".join(session.ask(text))


def test_prompt_prints_the_answer_and_exits(model_dir):
    result = runner.invoke(app, ["chat", str(model_dir), "--prompt", "안녕하세요", "--temperature", "0",
                                 "--max-new-tokens", "12"])
    assert result.exit_code == 0, result.output
    assert result.stdout == _greedy_answer(model_dir, "안녕하세요") + "\n"
    assert "12 tokens" in result.stderr and "tok/s" in result.stderr


def test_stdin_is_the_message_and_json_carries_the_statistics(model_dir):
    result = runner.invoke(app, ["chat", "--model_path", str(model_dir), "--json", "--temperature", "0",
                                 "--max_new_tokens", "12", "--top-k", "5", "--seed", "1",
                                 "--tokenizer_path", str(model_dir)],
                           input="hello there\n")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["answer"] == _greedy_answer(model_dir, "hello there")
    assert report["tokens"] == 12 and report["stop_reason"] == "max_new_tokens"
    assert report["tokens_per_s"] > 0 and 0 < report["ttft_s"] <= report["total_s"]
    assert report["params"]["top_k"] == 5 and report["params"]["seed"] == 1
    assert report["device"] == "cpu" and report["dtype"] == "float32"


def test_bad_input_exits_2_with_one_clear_line(model_dir, tmp_path):
    result = runner.invoke(app, ["chat", str(tmp_path), "--prompt", "hi"])
    assert result.exit_code == 2 and "not a model folder" in result.stderr
    result = runner.invoke(app, ["chat", "--prompt", "hi"])
    assert result.exit_code == 2 and "no model given" in result.stderr
    result = runner.invoke(app, ["chat", str(model_dir), "--prompt", "hi", "--top-p", "1.5"])
    assert result.exit_code == 2 and "--top-p" in result.stderr
    result = runner.invoke(app, ["chat", str(model_dir), "--prompt", "hi", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.stderr


def test_a_vocabulary_mismatch_exits_2(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "mismatch"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 100
    (folder / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["chat", str(folder), "--prompt", "hi"])
    assert result.exit_code == 2
    assert "vocabulary mismatch" in result.stderr and "Traceback" not in result.stderr


def test_a_run_folder_without_final_model_uses_its_newest_checkpoint_and_says_so(model_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    for step in (5, 12):
        shutil.copytree(model_dir, run / "checkpoints" / f"step-{step}")
    result = runner.invoke(app, ["chat", str(run), "--prompt", "hi", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert "checkpoints/step-12" in result.stderr.replace("\n", "")


def _multi_turn_answers(model_dir, messages, max_new_tokens=6):
    from moai_llm.inference import ChatSession, SamplingParams, load_for_chat

    model, tokenizer, info = load_for_chat(model_dir)
    session = ChatSession(model, tokenizer, info,
                          params=SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    return ["".join(session.ask(m)) for m in messages]


def test_piped_lines_are_separate_messages_and_exit_is_not_sent(model_dir):
    """`printf 'What is an ETF?\\n/exit\\n' | moai chat DIR --json` asks one question: the /exit
    line leaves, as it does at the prompt, instead of becoming part of the message."""
    alone = runner.invoke(app, ["chat", str(model_dir), "--json", "--temperature", "0",
                                "--max-new-tokens", "6"], input="What is an ETF?\n")
    with_exit = runner.invoke(app, ["chat", str(model_dir), "--json", "--temperature", "0",
                                    "--max-new-tokens", "6"], input="What is an ETF?\n/exit\n")
    assert alone.exit_code == 0 and with_exit.exit_code == 0, with_exit.output
    assert json.loads(with_exit.stdout)["prompt_tokens"] == json.loads(alone.stdout)["prompt_tokens"]
    two = runner.invoke(app, ["chat", str(model_dir), "--temperature", "0", "--max-new-tokens", "6"],
                        input="hello\n\nwhat next\n/exit\nnever asked\n")
    assert two.exit_code == 0, two.output
    assert two.stdout == "".join(a + "\n" for a in _multi_turn_answers(model_dir, ["hello", "what next"]))


def test_a_missing_model_is_named_even_with_empty_stdin(tmp_path):
    result = runner.invoke(app, ["chat", "--model_path", str(tmp_path / "missing" / "dir")], input="")
    assert result.exit_code == 2
    assert "missing/dir: no such folder" in result.stderr and "stdin" not in result.stderr
