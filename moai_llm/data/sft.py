"""Rendering conversations with the tokenizer's own chat template, and finding where loss goes.

The loss covers each assistant answer and the end-of-turn token after it (`<|im_end|>` in
ChatML and Qwen, `<|eot_id|>` in Llama 3), never the prompt, system message or role headers.
The template is the model's own (a hub model keeps its format); spans are found from the
template's output, not by re-implementing it:

1. an answer's characters are where the rendered conversation changes when only that answer
   is replaced by a placeholder (so templates that strip, trim or move text still work);
2. the end-of-turn token is the special token that follows the answer;
3. when the generation prompt (`add_generation_prompt=True` over the messages before the
   answer) is a prefix of the conversation, the span starts where that prompt ends: what a
   model is asked to produce at inference is exactly what it is trained on. For the last
   answer this must hold, or the template is refused.

Thinking templates (Qwen3: `<think>...</think>`, `enable_thinking`) take `thinking`:
"off" removes reasoning from the data and renders with `enable_thinking=False`, so the empty
think block the template inserts belongs to the prompt and only the answer is learned; "keep"
trains the reasoning written in assistant messages (as `<think>...</think>` in the content or a
`reasoning_content` field) together with the answer.

The template is compiled with jinja2's sandbox as transformers' `apply_chat_template` does
(trim_blocks, lstrip_blocks, raise_exception, tojson, `{% generation %}` blocks), bounded in time
and output (template_sandbox.py), read straight from the tokenizer folder: preparing SFT data
then needs neither transformers nor torch. A conversation holds at most `MAX_MESSAGES`
messages: each answer's span costs two renders of the whole conversation, so the work grows with
the square of its length (issue #22 reported 70 s for one record of 4,000 turns).

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
from os.path import commonprefix
from pathlib import Path

from moai_llm.data.template_sandbox import compile_template, render_bounded
from moai_llm.errors import MoaiInputError

THINKING = ("off", "keep")
MAX_MESSAGES = 512  # per conversation; render() of 500 ChatML messages took 1.5 s, of 1,000 6.1 s (shared 2-core CPU)
_THINK_END = "</think>"


class ChatTemplate:
    """A tokenizer folder's chat template, compiled once; call it like apply_chat_template.

    `special_tokens`: the tokenizer's special tokens (end-of-turn candidates); `thinking`: "off"
    or "keep" (used only by templates that know thinking blocks).
    """

    def __init__(self, source: str, special: dict[str, str | None], end_token: str | None,
                 special_tokens: tuple[str, ...] | list[str] = (), thinking: str = "off",
                 name: str = "the tokenizer"):
        if thinking not in THINKING:
            raise MoaiInputError(f"--thinking {thinking}: unknown value", hint="use off or keep")
        self.name = name  # how messages name the template (its tokenizer folder)
        self.template = compile_template(source, name)
        self.special = special
        self.end_token = end_token
        self.special_tokens = tuple(sorted({t for t in special_tokens if t}, key=len, reverse=True))
        self.thinks = "<think>" in source or "enable_thinking" in source or "reasoning_content" in source
        self.thinking = thinking

    @classmethod
    def from_dir(cls, tokenizer_dir: str | os.PathLike, thinking: str = "off") -> ChatTemplate:
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
        return cls(source, special, end, _special_tokens(folder, config), thinking, name=str(folder))

    def __call__(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        extra = {"enable_thinking": False} if self.thinks and self.thinking == "off" else {}
        return render_bounded(self.template, self.name, messages=messages,
                              add_generation_prompt=add_generation_prompt, **self.special, **extra)

    def render_prompt(self, messages: list[dict[str, str]], **kwargs) -> str:
        """The prompt for the next answer, as `apply_chat_template(..., add_generation_prompt=True,
        **kwargs)` writes it (chat), within the sandbox's limits."""
        return render_bounded(self.template, self.name, messages=messages, add_generation_prompt=True,
                              **self.special, **kwargs)

    def prepare(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The messages as they are rendered: with thinking off, assistant reasoning removed."""
        if not (self.thinks and self.thinking == "off"):
            return messages
        out = []
        for m in messages:
            if m.get("role") == "assistant":
                content = m["content"]
                if _THINK_END in content:
                    content = content.split(_THINK_END)[-1].lstrip("\n")
                m = {k: v for k, v in m.items() if k != "reasoning_content"} | {"content": content}
            out.append(m)
        return out


def _special_tokens(folder: Path, config: dict) -> list[str]:
    """Special tokens of a tokenizer folder: tokenizer.json's added tokens marked special, and
    tokenizer_config.json's added_tokens_decoder (older transformers)."""
    tokens = [v.get("content") for v in (config.get("added_tokens_decoder") or {}).values()
              if isinstance(v, dict) and v.get("special")]
    file = folder / "tokenizer.json"
    if file.is_file():
        try:
            added = json.loads(file.read_text(encoding="utf-8")).get("added_tokens") or []
        except (json.JSONDecodeError, UnicodeDecodeError):
            added = []  # the tokenizer loader reports a broken tokenizer.json with its own message
        tokens += [t.get("content") for t in added if isinstance(t, dict) and t.get("special")]
    return [t for t in tokens if isinstance(t, str)]


def render(template: ChatTemplate, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the (start, end) character spans that carry loss."""
    if len(messages) > MAX_MESSAGES:
        raise MoaiInputError(f"{len(messages):,} messages in one conversation; moai renders at most "
                             f"{MAX_MESSAGES:,}", hint="split the conversation into several records")
    messages = template.prepare(messages)
    text = template(messages)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not message["content"]:
            continue
        start, end = _answer_span(template, messages, i, text)
        prompt = template(messages[:i], add_generation_prompt=True)
        if text.startswith(prompt) and len(prompt) <= start:
            start = len(prompt)
        elif i == len(messages) - 1:
            raise MoaiInputError("the tokenizer's chat template does not render conversations incrementally "
                                 "(its generation prompt is not how it writes the last answer)",
                                 hint="use a template whose add_generation_prompt output starts each answer "
                                      "(ChatML, Qwen, Llama 3 do)")
        end = _through_end_token(template, text, end)
        if end > start:
            spans.append((start, end))
    return text, spans


def _answer_span(template: ChatTemplate, messages: list[dict[str, str]], i: int, text: str) -> tuple[int, int]:
    """Where message i's content lands in `text`: the part that changes when only that content
    is replaced by a placeholder character it does not contain."""
    content = messages[i]["content"]
    placeholder = next(c for c in "\x00\x01\x02\x03" if c not in content)
    other = list(messages)
    other[i] = {k: v for k, v in messages[i].items() if k != "reasoning_content"} | {"content": placeholder}
    alt = template(other)
    start = len(commonprefix([text, alt]))
    tail = len(commonprefix([text[start:][::-1], alt[start:][::-1]]))
    end = len(text) - tail
    answer = content.split(_THINK_END)[-1].strip() if template.thinks else content.strip()
    if answer and answer not in text[start:end]:
        raise MoaiInputError("the tokenizer's chat template does not write assistant answers as given",
                             hint="use a template that renders message['content'] (ChatML, Qwen, Llama 3 do)")
    return start, end


def _through_end_token(template: ChatTemplate, text: str, end: int) -> int:
    """`end` moved past the end-of-turn token that follows the answer (spaces allowed before
    it), or unchanged when the template writes none there."""
    rest = text[end:]
    stripped = rest.lstrip(" \t")
    gap = len(rest) - len(stripped)
    for token in template.special_tokens or ((template.end_token,) if template.end_token else ()):
        if stripped.startswith(token):
            return end + gap + len(token)
    return end
