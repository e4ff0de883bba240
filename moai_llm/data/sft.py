"""Rendering conversations with the tokenizer's chat template, and finding where loss goes.

The loss covers the assistant's answers and their end token (`<|im_end|>` in ChatML), never
the prompt, the system message or the role headers; multi-turn conversations have one span per
assistant turn. Spans are found with the template itself, not by re-implementing it: the text
before assistant turn i is the template applied to the first i messages with
`add_generation_prompt=True`, and the turn ends where the template applied to i+1 messages ends.
That works for every template that renders a conversation incrementally (ChatML and most).

The template is compiled with jinja2's sandbox exactly as transformers' `apply_chat_template`
does (trim_blocks, lstrip_blocks, raise_exception, tojson), read straight from the tokenizer
folder: preparing SFT data then needs neither transformers nor torch (seconds per run).

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20, d / "tok", vocab_size=300)
    >>> template = ChatTemplate.from_dir(tok)       # a tokenizer folder with a ChatML template
    >>> text, spans = render(template, [{"role": "user", "content": "hi"},
    ...                                 {"role": "assistant", "content": "hello"}])
    >>> [text[s:e] for s, e in spans]
    ['hello<|im_end|>']
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from moai_llm.errors import MoaiInputError


class ChatTemplate:
    """A tokenizer folder's chat template, compiled once; call it like apply_chat_template."""

    def __init__(self, source: str, special: dict[str, str | None], end_token: str | None):
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        env.globals["raise_exception"] = raise_exception
        self.template = env.from_string(source)
        self.special = special
        self.end_token = end_token

    @classmethod
    def from_dir(cls, tokenizer_dir: str | os.PathLike) -> ChatTemplate:
        folder = Path(tokenizer_dir)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        source = None
        if (folder / "chat_template.jinja").is_file():  # transformers 5 writes it here and prefers it
            source = (folder / "chat_template.jinja").read_text()
        elif isinstance(config.get("chat_template"), str):
            source = config["chat_template"]
        elif isinstance(config.get("chat_template"), list):  # named templates: take "default"
            source = next((t["template"] for t in config["chat_template"] if t.get("name") == "default"), None)
        if not source:
            raise MoaiInputError(f"{folder}: the tokenizer has no chat template, which --mode sft needs",
                                 hint="use a tokenizer from `moai tokenizer train` (it carries ChatML)")

        def token(name):
            value = config.get(name)
            return value.get("content") if isinstance(value, dict) else value

        special = {k: token(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        end = "<|im_end|>" if "<|im_end|>" in source else special["eos_token"]
        return cls(source, special, end)

    def __call__(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)


def render(template: ChatTemplate, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the (start, end) character spans that carry loss."""
    text = template(messages)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template(messages[:i], add_generation_prompt=True)
        through = template(messages[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise MoaiInputError("the tokenizer's chat template does not render conversations incrementally",
                                 hint="use a ChatML template (moai tokenizers carry one)")
        start = len(before)
        cut = through.find(template.end_token, start) if template.end_token else -1
        end = cut + len(template.end_token) if cut >= 0 else len(through.rstrip())
        if end > start:
            spans.append((start, end))
    return text, spans
