"""Every supported SFT schema becomes the same chat `messages`."""

from __future__ import annotations

import pytest

from moai_llm.data.formats import to_messages
from moai_llm.errors import MoaiInputError

QA = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("record", [
    {"question": "What is 2+2?", "answer": "4"},
    {"input": "What is 2+2?", "output": "4"},                      # BCCard finance Q&A
    {"instruction": "What is 2+2?", "input": "", "output": "4"},   # Alpaca without input
    {"prompt": "What is 2+2?", "completion": "4"},
    {"messages": QA},
    {"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
])
def test_common_schemas_normalise_to_messages(record):
    assert to_messages(record) == QA


def test_alpaca_input_is_appended_to_the_instruction():
    msgs = to_messages({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})
    assert msgs[0] == {"role": "user", "content": "Add the numbers.\n\n2 and 3"}


def test_explicit_mapping_and_system_prompt():
    msgs = to_messages({"q": "Hi", "a": "Hello", "question": "ignored"}, {"prompt": "q", "response": "a", "system": "Be kind."})
    assert msgs == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"}]


def test_sharegpt_multi_turn_with_system():
    record = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                                {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]}
    assert [m["role"] for m in to_messages(record)] == ["system", "user", "assistant", "user", "assistant"]


def test_numeric_answers_become_text():
    assert to_messages({"question": "1+2?", "answer": 3})[1]["content"] == "3"


def test_unknown_schema_lists_the_columns_and_the_flags():
    with pytest.raises(MoaiInputError) as err:
        to_messages({"foo": 1, "bar": 2}, where="x.jsonl:3")
    assert "x.jsonl:3" in str(err.value) and "foo, bar" in str(err.value)
    assert "--prompt-column" in err.value.hint


def test_missing_mapped_column_is_reported():
    with pytest.raises(MoaiInputError, match="no column 'ans'"):
        to_messages({"q": "x"}, {"prompt": "q", "response": "ans"})


def test_a_conversation_without_an_answer_is_refused():
    with pytest.raises(MoaiInputError, match="no assistant answer"):
        to_messages({"messages": [{"role": "user", "content": "hi"}]})
