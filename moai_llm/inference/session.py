"""A multi-turn chat: history through the tokenizer's chat template, trimmed to the context.

`ChatSession` keeps the messages (system prompt first), builds the prompt with the
tokenizer's chat template (or a plain "User:/Assistant:" format when the tokenizer has none,
said once), and, when the prompt plus the answer budget would not fit the model's context,
drops the oldest turns (said once per session, never silently). `handle_command` implements the
slash commands of `moai chat` so that they can be tested without a terminal.

    >>> session = ChatSession(model, tokenizer, info, system="Be brief.")  # doctest: +SKIP
    >>> for piece in session.ask("안녕하세요"):                           # doctest: +SKIP
    ...     print(piece, end="", flush=True)
    >>> session.last_stats.line()                                        # doctest: +SKIP
    '17 tokens · 41.0 tok/s · TTFT 0.05 s'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_text_atomic
from moai_llm.errors import MoaiInputError
from moai_llm.inference.generation import GenerationStats, SamplingParams, stream_generate

HELP = """\
/reset          forget the conversation (the system prompt stays)
/system TEXT    set the system prompt (empty TEXT removes it)
/save FILE      write the conversation as JSON messages
/params [k=v]   show the sampling settings, or change one (e.g. /params temperature=0)
/help           this list
/exit           leave (Ctrl-D too); Ctrl-C stops the current answer"""


@dataclass
class CommandResult:
    message: str = ""
    exit: bool = False
    error: bool = False


class ChatSession:
    """History, prompt building and trimming for one conversation with one model."""

    def __init__(
        self, model: Any, tokenizer: Any, info: dict | None = None, system: str | None = None,
        params: SamplingParams | None = None, notify: Callable[[str], None] | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.info = info or {}
        self.params = params or SamplingParams()
        self.system = system or None
        self.turns: list[dict] = []   # user/assistant messages, oldest first
        self.last_stats = GenerationStats()
        self.notify = notify or (lambda message: None)
        self.stop_ids = self.info.get("stop_ids") or _default_stop_ids(tokenizer)
        self.context_length = self.info.get("context_length") or getattr(
            getattr(model, "config", None), "max_position_embeddings", None)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.template = _bounded_template(tokenizer, self.info) if self.has_template else None
        self._said_trim = False
        if not self.has_template:
            self.notify("the tokenizer has no chat template: using a plain "
                        "'User:/Assistant:' prompt format")

    # ----------------------------------------------------------------- prompt
    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        if self.template is not None:  # rendered bounded in time and size (data/template_sandbox.py)
            text = self.template.render_prompt(messages, **self.info.get("template_kwargs", {}))
        else:
            text = plain_prompt(messages)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _fit(self, user_message: dict) -> list[int]:
        """Prompt ids for the history plus `user_message`, dropping oldest turns until the
        prompt leaves room for the answer (max_new_tokens, at most half the context)."""
        while True:
            ids = self.prompt_ids(self.messages + [user_message])
            limit = self.context_length
            # room kept for the answer; at most half the context, so a large --max-new-tokens on a
            # short-context model does not wipe the whole history at every turn
            reserve = min(self.params.max_new_tokens, (limit or 0) // 2)
            if not limit or len(ids) + reserve <= limit or not self.turns:
                break
            # drop the oldest user turn and the assistant answer that followed it
            drop = 2 if len(self.turns) > 1 and self.turns[1]["role"] == "assistant" else 1
            del self.turns[:drop]
            if not self._said_trim:
                self._said_trim = True
                self.notify(f"the conversation is longer than the context ({limit} tokens): "
                            "dropping the oldest turns")
        if self.context_length and len(ids) >= self.context_length:
            raise MoaiInputError(f"the message is {len(ids)} tokens, more than the model's context "
                             f"({self.context_length} tokens); shorten it")
        return ids

    # ----------------------------------------------------------------- answer
    def ask(self, text: str) -> Iterator[str]:
        """Stream the answer to `text`; the exchange joins the history when the answer ends
        (also when it is stopped early: what was shown stays in the conversation)."""
        user = {"role": "user", "content": text}
        ids = self._fit(user)
        self.last_stats = GenerationStats()
        pieces: list[str] = []
        try:
            for piece in stream_generate(
                self.model, self.tokenizer, ids, self.params, self.stop_ids,
                stats=self.last_stats, max_length=self.context_length,
            ):
                pieces.append(piece)
                yield piece
        finally:
            answer = "".join(pieces)
            if not self.has_template:  # a plain-format model may start the next turn itself
                answer = answer.split("\nUser:")[0]
            self.turns += [user, {"role": "assistant", "content": answer.strip()}]

    def reset(self) -> None:
        self.turns = []

    # ----------------------------------------------------------------- commands
    def handle_command(self, line: str) -> CommandResult:
        """Run one slash command (`/reset`, `/system`, `/save`, `/params`, `/help`, `/exit`)."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return CommandResult(exit=True)
        if name == "/help":
            return CommandResult(HELP)
        if name == "/reset":
            self.reset()
            return CommandResult("conversation reset")
        if name == "/system":
            self.system = arg or None
            return CommandResult(f"system prompt set: {arg}" if arg else "system prompt removed")
        if name == "/save":
            if not arg:
                return CommandResult("usage: /save FILE", error=True)
            try:
                path = save_messages(self.messages, arg)
            except OSError as exc:
                return CommandResult(f"cannot write {arg}: {exc.strerror or exc}", error=True)
            return CommandResult(f"saved {len(self.messages)} messages to {path}")
        if name == "/params":
            if arg:
                return self._set_params(arg)
            return CommandResult("  ".join(f"{k}={v}" for k, v in self.params.to_dict().items()))
        return CommandResult(f"unknown command {name}; /help lists them", error=True)

    def _set_params(self, arg: str) -> CommandResult:
        types = {f.name: f.type for f in fields(SamplingParams)}
        for item in arg.split():
            key, _, value = item.partition("=")
            key = key.replace("-", "_")
            if key not in types or not value:
                return CommandResult(f"/params {item}: expected one of {', '.join(types)} as key=value",
                                     error=True)
            try:
                if key == "seed":
                    parsed: Any = None if value.lower() == "none" else int(value)
                elif key in ("top_k", "max_new_tokens"):
                    parsed = int(value)
                else:
                    parsed = float(value)
            except ValueError:
                return CommandResult(f"/params {item}: {value!r} is not a number", error=True)
            problem = sampling_problem(key, parsed)
            if problem:
                return CommandResult(f"/params {item}: {problem}", error=True)
            setattr(self.params, key, parsed)
        return CommandResult("  ".join(f"{k}={v}" for k, v in self.params.to_dict().items()))


def sampling_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be the sampling setting `key` (None when it can).

    >>> sampling_problem("temperature", float("nan")), sampling_problem("top_p", 0.5)
    ('temperature must be a finite number ≥ 0', None)
    """
    import math

    rules = {"temperature": (lambda v: math.isfinite(v) and v >= 0, "a finite number ≥ 0"),
             "top_p": (lambda v: math.isfinite(v) and 0 < v <= 1, "in (0, 1]"),
             "top_k": (lambda v: v >= 0, "≥ 0"),
             "repetition_penalty": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
             "max_new_tokens": (lambda v: v >= 1, "≥ 1")}
    if key in rules and value is not None and not rules[key][0](value):
        return f"{key} must be {rules[key][1]}"
    return None


def plain_prompt(messages: list[dict]) -> str:
    """The fallback format for tokenizers without a chat template."""
    parts = []
    for message in messages:
        role = {"system": "System", "user": "User", "assistant": "Assistant"}.get(
            message["role"], message["role"].capitalize())
        parts.append(f"{role}: {message['content']}\n")
    return "".join(parts) + "Assistant:"


def save_messages(messages: list[dict], path: str | Path) -> Path:
    """Write `messages` as a JSON list (temp file + rename, so a failed write leaves nothing)."""
    return write_text_atomic(Path(path).expanduser(), json.dumps(messages, ensure_ascii=False, indent=2) + "\n")


def _default_stop_ids(tokenizer: Any) -> list[int]:
    from moai_llm.inference.loading import stop_token_ids

    return stop_token_ids(tokenizer)


def _bounded_template(tokenizer: Any, info: dict) -> Any:
    """The tokenizer's chat template compiled in moai's bounded sandbox (a syntax error is named
    now, not at the first message)."""
    from moai_llm.data.sft import ChatTemplate

    source = tokenizer.chat_template
    if isinstance(source, dict):  # named templates: the default one
        source = source.get("default") or next(iter(source.values()))
    special = {k: getattr(tokenizer, k, None) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    name = info.get("tokenizer_path") or getattr(tokenizer, "name_or_path", None) or "the tokenizer"
    return ChatTemplate(source, special, None, thinking="keep", name=str(name))
