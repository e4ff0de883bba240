"""SFT schemas: every common instruction-data layout normalised to chat `messages`.

Supported (detected from the record's keys, in this order):
  explicit mapping     {"prompt": COL, "response": COL, "system": TEXT}  (--prompt-column ...)
  OpenAI               {"messages": [{"role", "content"}, ...]}  (assistant "reasoning_content" kept)
  ShareGPT             {"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}
  Alpaca               {"instruction", "input" (optional), "output"}
  question/answer      {"question", "answer"}
  input/output         {"input", "output"}      (the BCCard finance Q&A schema)
  prompt/response      {"prompt", "response"|"completion"}

    >>> to_messages({"question": "2+2?", "answer": "4"})
    [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]
"""

from __future__ import annotations

from typing import Any

from moai_llm.errors import MoaiInputError

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
          "model": "assistant", "chatgpt": "assistant", "system": "system", "tool": "tool"}
SCHEMAS = ("messages", "conversations", "instruction/input/output", "question/answer", "input/output",
           "prompt/response")
_HINT = ("use one of the schemas messages, conversations (ShareGPT), instruction/input/output (Alpaca), "
         "question/answer, input/output, or pass --prompt-column and --response-column")


def to_messages(record: dict[str, Any], mapping: dict[str, str] | None = None,
                where: str = "record") -> list[dict[str, str]]:
    """Normalise one SFT record to [{"role", "content"}, ...] ending with an assistant turn.

    `mapping` keys: "prompt" and "response" (column names), "system" (a system prompt text,
    added when the record has none).
    """
    mapping = mapping or {}
    if mapping.get("prompt") or mapping.get("response"):
        messages = _from_columns(record, mapping.get("prompt"), mapping.get("response"), where)
    elif "messages" in record:
        messages = _from_turns(record["messages"], "role", "content", where, "messages")
    elif "conversations" in record:
        turns = record["conversations"]
        keys = ("from", "value") if turns and isinstance(turns[0], dict) and "from" in turns[0] else ("role", "content")
        messages = _from_turns(turns, *keys, where, "conversations")
    elif "instruction" in record and "output" in record:
        prompt = _text(record, "instruction", where)
        extra = record.get("input")
        if isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(record, "output", where)}]
        if isinstance(record.get("system"), str) and record["system"].strip():
            messages.insert(0, {"role": "system", "content": record["system"]})
    elif "question" in record and "answer" in record:
        messages = _from_columns(record, "question", "answer", where)
    elif "input" in record and "output" in record:
        messages = _from_columns(record, "input", "output", where)
    elif "prompt" in record and ("response" in record or "completion" in record):
        messages = _from_columns(record, "prompt", "response" if "response" in record else "completion", where)
    else:
        raise MoaiInputError(f"{where}: no SFT schema recognised; columns found: {', '.join(map(str, record)) or '(none)'}",
                             hint=_HINT)
    system = mapping.get("system")
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    if not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise MoaiInputError(f"{where}: the conversation has no assistant answer", hint="every SFT record needs a non-empty answer")
    return messages


def _text(record: dict[str, Any], column: str, where: str) -> str:
    value = record.get(column)
    if value is None or column not in record:
        raise MoaiInputError(f"{where}: no column '{column}'; columns found: {', '.join(map(str, record))}", hint=_HINT)
    if not isinstance(value, str):
        value = str(value)  # numeric answers ("answer": 3) are common
    return value


def _from_columns(record: dict[str, Any], prompt: str | None, response: str | None, where: str) -> list[dict[str, str]]:
    if not prompt or not response:
        raise MoaiInputError("--prompt-column and --response-column go together", hint="pass both")
    return [{"role": "user", "content": _text(record, prompt, where)},
            {"role": "assistant", "content": _text(record, response, where)}]


def _from_turns(turns: Any, role_key: str, content_key: str, where: str, column: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise MoaiInputError(f"{where}: '{column}' must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise MoaiInputError(f"{where}: {column}[{i}] needs '{role_key}' and '{content_key}'", hint=_HINT)
        role = _ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise MoaiInputError(f"{where}: {column}[{i}] has unknown role '{turn[role_key]}'",
                                 hint="roles are system, user/human, assistant/gpt")
        content = turn[content_key]
        message = {"role": role, "content": content if isinstance(content, str) else str(content)}
        reasoning = turn.get("reasoning_content")  # OpenAI-style reasoning field (Qwen3, DeepSeek-R1 data)
        if role == "assistant" and isinstance(reasoning, str) and reasoning.strip():
            message["reasoning_content"] = reasoning
        messages.append(message)
    return messages
