"""Chat templates render bounded (moai_llm/data/template_sandbox.py): a runaway template is one
line naming it within the time limit, in data preparation and in chat; a conversation too long
to render in reasonable time is refused at once."""

from __future__ import annotations

import time

import pytest

from moai_llm.data.sft import MAX_MESSAGES, ChatTemplate, render
from moai_llm.data.template_sandbox import compile_template, render_bounded
from moai_llm.errors import MoaiInputError

HANG = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("source, says", [
    (HANG, "ran longer than 0.5 s"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "wrote more than"),
    ("{{ 'x' * 10**10 }}", "built a value of"),
    ("{{ 'x'.ljust(10**9) }}", "called a function with 1,000,000,000"),
    ("{{ 7 ** 100000000 }}", r"computed 7 \*\* 100000000"),
    ("{{ messages.__class__.__mro__ }}", "tried something the sandbox forbids"),
    ("{{ raise_exception('roles must alternate') }}", "refused the conversation: roles must alternate"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"),
    ("{{ messages[5].content }}", "the chat template"),
])
def test_a_template_that_fails_or_runs_away_is_one_line_naming_it(source, says):
    template = compile_template(source, "TOK")
    started = time.perf_counter()
    with pytest.raises(MoaiInputError, match=says) as caught:
        render_bounded(template, "TOK", seconds=0.5, messages=[{"role": "user", "content": "hi"}])
    assert str(caught.value).startswith("TOK: ") and "\n" not in str(caught.value)
    assert time.perf_counter() - started < 5


def test_a_syntax_error_names_the_template_and_line():
    with pytest.raises(MoaiInputError, match="TOK: the chat template has a syntax error on its line 2"):
        compile_template("ok\n{% if %}", "TOK")


def test_the_time_limit_can_be_set(monkeypatch):
    monkeypatch.setenv("MOAI_TEMPLATE_SECONDS", "0.3")
    with pytest.raises(MoaiInputError, match="ran longer than 0.3 s"):
        render_bounded(compile_template(HANG, "TOK"), "TOK")


def test_a_conversation_longer_than_the_limit_is_refused_at_once(tmp_path):
    from moai_llm.tokenizer import train_tokenizer

    tok = train_tokenizer(["hello world"] * 20, tmp_path / "tok", vocab_size=300)
    template = ChatTemplate.from_dir(tok)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(4000)]
    started = time.perf_counter()
    with pytest.raises(MoaiInputError, match=f"4,000 messages in one conversation; moai renders at most {MAX_MESSAGES}"):
        render(template, turns)
    assert time.perf_counter() - started < 1  # refused before any rendering
    text, spans = render(template, turns[:8])  # a normal conversation still renders, answers found
    assert [text[s:e] for s, e in spans][0] == "turn 1<|im_end|>"


def test_chat_renders_its_prompt_bounded(tmp_path, monkeypatch):
    """The chat session renders through the same sandbox: a runaway template stops in time."""
    from transformers import AutoTokenizer

    from moai_llm.inference.session import ChatSession
    from moai_llm.tokenizer import train_tokenizer

    tok_dir = train_tokenizer(["hello world"] * 20, tmp_path / "tok", vocab_size=300)
    (tok_dir / "chat_template.jinja").write_text(HANG)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    session = ChatSession(None, tokenizer, {"context_length": 512, "tokenizer_path": str(tok_dir)})
    monkeypatch.setenv("MOAI_TEMPLATE_SECONDS", "0.5")
    with pytest.raises(MoaiInputError, match="tok: the chat template ran longer than 0.5 s"):
        session.prompt_ids([{"role": "user", "content": "hi"}])
