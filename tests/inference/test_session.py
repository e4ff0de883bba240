"""ChatSession: the chat template, multi-turn history, trimming, the plain fallback, commands."""

from __future__ import annotations

import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.inference import ChatSession, SamplingParams


def _session(loaded, **kwargs):
    model, tokenizer, info = loaded
    notes: list[str] = []
    params = kwargs.pop("params", SamplingParams(temperature=0, max_new_tokens=8))
    session = ChatSession(model, tokenizer, info, params=params, notify=notes.append, **kwargs)
    return session, notes


def test_turns_build_up_through_the_chat_template(loaded):
    session, notes = _session(loaded, system="Be brief.")
    first = "".join(session.ask("hello"))
    "".join(session.ask("and then?"))
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.messages[2]["content"] == first.strip()
    text = session.tokenizer.decode(session.prompt_ids(session.messages))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert "and then?" in text and notes == []


def test_old_turns_are_dropped_to_fit_the_context_and_it_is_said_once(loaded):
    session, notes = _session(loaded, system="S", params=SamplingParams(temperature=0, max_new_tokens=40))
    for i in range(12):
        "".join(session.ask(f"turn {i}: " + "words " * 15))
        assert len(session.prompt_ids(session.messages)) <= session.context_length
    assert session.messages[0] == {"role": "system", "content": "S"}  # the system prompt stays
    assert session.turns[0]["role"] == "user" and "turn 0:" not in session.turns[0]["content"]
    assert session.turns[-2]["content"].startswith("turn 11:")
    assert len([n for n in notes if "dropping the oldest" in n]) == 1


def test_a_message_longer_than_the_context_is_an_input_error(loaded):
    session, _ = _session(loaded)
    with pytest.raises(MoaiInputError, match="more than the model's context"):
        "".join(session.ask("word " * 400))


def test_without_a_chat_template_a_plain_format_is_used_and_said(loaded):
    model, tokenizer, info = loaded
    plain = type(tokenizer).from_pretrained(info["tokenizer_path"])
    plain.chat_template = None
    notes: list[str] = []
    session = ChatSession(model, plain, dict(info, chat_template=False), system="Be kind.",
                          params=SamplingParams(temperature=0, max_new_tokens=5), notify=notes.append)
    "".join(session.ask("hi"))
    assert len(notes) == 1 and "plain 'User:/Assistant:'" in notes[0]
    text = plain.decode(session.prompt_ids(session.messages + [{"role": "user", "content": "x"}]))
    assert text.startswith("System: Be kind.\nUser: hi\nAssistant: ")
    assert text.endswith("User: x\nAssistant:")


def test_commands_reset_system_params_help_exit(loaded):
    session, _ = _session(loaded)
    "".join(session.ask("hello"))
    assert session.handle_command("/reset").message == "conversation reset"
    assert session.turns == []
    assert "Be terse" in session.handle_command("/system Be terse").message
    assert session.messages == [{"role": "system", "content": "Be terse"}]
    assert session.handle_command("/system").message == "system prompt removed"
    assert "temperature=0" in session.handle_command("/params").message
    result = session.handle_command("/params temperature=0.5 top-k=7 seed=3")
    assert not result.error and session.params.temperature == 0.5
    assert session.params.top_k == 7 and session.params.seed == 3
    assert session.handle_command("/params temperature=hot").error
    assert session.handle_command("/params colour=red").error
    assert "/save FILE" in session.handle_command("/help").message
    assert session.handle_command("/exit").exit and session.handle_command("/quit").exit
    assert session.handle_command("/bogus").error


def test_save_writes_the_conversation_as_json_messages(loaded, tmp_path):
    session, _ = _session(loaded, system="sys")
    "".join(session.ask("안녕"))
    result = session.handle_command(f"/save {tmp_path / 'chat.json'}")
    assert not result.error and "3 messages" in result.message
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved == session.messages and saved[1] == {"role": "user", "content": "안녕"}
    assert session.handle_command("/save").error
    assert session.handle_command(f"/save {tmp_path / 'no' / 'such' / 'dir.json'}").error


def test_an_answer_stopped_early_keeps_what_was_shown(loaded):
    session, _ = _session(loaded, params=SamplingParams(temperature=0, max_new_tokens=30))
    answer = session.ask("tell me a long story")
    shown = next(answer) + next(answer)
    answer.close()  # what the CLI does on Ctrl-C
    assert session.turns[-1] == {"role": "assistant", "content": shown.strip()}


def test_a_large_answer_budget_keeps_at_most_half_the_context_free(loaded):
    session, notes = _session(loaded, params=SamplingParams(temperature=0, max_new_tokens=4))
    "".join(session.ask("first"))
    session.params.max_new_tokens = 10_000  # far beyond the 256-token context
    "".join(session.ask("second"))
    assert [m["content"] for m in session.turns if m["role"] == "user"] == ["first", "second"]
    assert notes == []
    assert session.last_stats.stop_reason in ("context", "stop_token")
