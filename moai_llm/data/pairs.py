"""Preference schemas: every common layout of (prompt, chosen, rejected) normalised to messages.

A pair becomes `Pair(prompt, chosen, rejected)`: the prompt is the conversation so far (a list
of chat messages, usually one user turn), chosen and rejected are the continuations that
differ (usually one assistant turn each). Supported (detected from the record's keys):

  explicit mapping   --prompt-column P --chosen-column C --rejected-column R
  strings            {"prompt": "...", "chosen": "...", "rejected": "..."}
  TRL conversational {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
  shared prefix      {"chosen": [messages], "rejected": [messages]}: the prompt is their common
                     first messages (UltraFeedback-binarized, hh-rlhf as message lists)
  HH-RLHF text       {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}

    >>> p = to_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    >>> p.prompt, p.chosen, p.rejected
    ([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '4'}], [{'role': 'assistant', 'content': '5'}])
    >>> to_pair({"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: go"}).chosen
    [{'role': 'assistant', 'content': 'hello'}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moai_llm.data.formats import _from_turns
from moai_llm.errors import MoaiInputError

_HINT = ("a preference record needs 'chosen' and 'rejected' (strings or message lists) and, unless they "
         "are conversations sharing their first messages, a 'prompt'; or pass --prompt-column, "
         "--chosen-column and --rejected-column")
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass
class Pair:
    """One preference pair as chat messages: prompt, then chosen or rejected after it."""

    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]


def to_pair(record: dict[str, Any], mapping: dict[str, str] | None = None, where: str = "record") -> Pair:
    """Normalise one preference record; refuse a missing column, an empty or identical answer.

    `mapping` keys: "prompt", "chosen", "rejected" (column names), "system" (a system prompt
    added when the prompt has none).
    """
    mapping = mapping or {}
    names = {k: mapping.get(k) or k for k in ("prompt", "chosen", "rejected")}
    for key in ("chosen", "rejected"):
        if names[key] not in record:
            raise MoaiInputError(f"{where}: no column '{names[key]}'; columns found: "
                                 f"{', '.join(map(str, record)) or '(none)'}", hint=_HINT)
    chosen = _value(record, names["chosen"], where)
    rejected = _value(record, names["rejected"], where)
    prompt_value = record.get(names["prompt"])
    if names["prompt"] in record and prompt_value is None:
        raise MoaiInputError(f"{where}: '{names['prompt']}' is null", hint=_HINT)
    if prompt_value is None:
        if mapping.get("prompt"):
            raise MoaiInputError(f"{where}: no column '{names['prompt']}'; columns found: "
                                 f"{', '.join(map(str, record))}", hint=_HINT)
        prompt, chosen_msgs, rejected_msgs = _shared_prefix(chosen, rejected, names, where)
    else:
        prompt = _messages(prompt_value, "user", where, names["prompt"])
        if not prompt or not any(m["content"].strip() for m in prompt):
            raise MoaiInputError(f"{where}: '{names['prompt']}' is empty", hint=_HINT)
        chosen_msgs = _strip_prompt(_messages(chosen, "assistant", where, names["chosen"]), prompt)
        rejected_msgs = _strip_prompt(_messages(rejected, "assistant", where, names["rejected"]), prompt)
    system = mapping.get("system")
    if system and (not prompt or prompt[0]["role"] != "system"):
        prompt = [{"role": "system", "content": system}, *prompt]
    for key, msgs in (("chosen", chosen_msgs), ("rejected", rejected_msgs)):
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            raise MoaiInputError(f"{where}: '{names[key]}' is empty (no assistant answer after the prompt)",
                                 hint="every pair needs a non-empty chosen and rejected answer")
    if chosen_msgs == rejected_msgs:
        raise MoaiInputError(f"{where}: '{names['chosen']}' and '{names['rejected']}' are identical",
                             hint="a pair teaches nothing when both answers are the same; fix or drop the row "
                                  "(--skip-bad-rows counts and skips such rows)")
    return Pair(prompt, chosen_msgs, rejected_msgs)


def _value(record: dict[str, Any], column: str, where: str) -> Any:
    value = record[column]
    if value is None:
        raise MoaiInputError(f"{where}: '{column}' is null", hint="every pair needs a non-empty chosen and rejected answer")
    if isinstance(value, str) and not value.strip():
        raise MoaiInputError(f"{where}: '{column}' is empty", hint="every pair needs a non-empty chosen and rejected answer")
    return value


def _messages(value: Any, role: str, where: str, column: str) -> list[dict[str, str]]:
    """A string is one message of `role`; a list is chat turns (role/content or from/value)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):  # a single message object
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict) and "from" in value[0]:
        return _from_turns(value, "from", "value", where, column)
    if isinstance(value, list):
        return _from_turns(value, "role", "content", where, column)
    return [{"role": role, "content": str(value)}]  # numeric answers ("chosen": 4)


def _strip_prompt(messages: list[dict[str, str]], prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    """UltraFeedback writes the prompt again at the start of chosen/rejected: drop it there."""
    n = len(prompt)
    if len(messages) > n and [(m["role"], m["content"]) for m in messages[:n]] == [(m["role"], m["content"]) for m in prompt]:
        return messages[n:]
    return messages


def _shared_prefix(chosen: Any, rejected: Any, names: dict[str, str], where: str):
    """No prompt column: the prompt is what chosen and rejected share at their start."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not _HH_TURN.search(chosen):
            raise MoaiInputError(f"{where}: no column '{names['prompt']}'; columns found: {', '.join([names['chosen'], names['rejected']])}"
                                 " (string answers need a prompt)", hint=_HINT)
        chosen, rejected = _hh_messages(chosen), _hh_messages(rejected)
    else:
        chosen = _messages(chosen, "assistant", where, names["chosen"])
        rejected = _messages(rejected, "assistant", where, names["rejected"])
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) == len(rejected):
        raise MoaiInputError(f"{where}: '{names['chosen']}' and '{names['rejected']}' are identical",
                             hint="a pair teaches nothing when both answers are the same; fix or drop the row")
    if n and chosen[n - 1]["role"] == "assistant" and n < len(chosen) and chosen[n]["role"] == "assistant":
        n -= 1  # never split between two assistant messages of one answer
    if n == 0:
        raise MoaiInputError(f"{where}: '{names['chosen']}' and '{names['rejected']}' share no first message, "
                             f"and there is no '{names['prompt']}' column", hint=_HINT)
    return chosen[:n], chosen[n:], rejected[n:]


def _hh_messages(text: str) -> list[dict[str, str]]:
    """Anthropic HH-RLHF text ("\\n\\nHuman: ...\\n\\nAssistant: ...") as chat messages."""
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages
