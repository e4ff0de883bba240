"""Rendering conversations with the tokenizer's chat template, and finding where loss goes.

The loss covers the assistant's answers and their end token (`<|im_end|>` in ChatML), never
the prompt, the system message or the role headers; multi-turn conversations have one span per
assistant turn. Spans are found with the template itself, not by re-implementing it: the text
before assistant turn i is the template applied to the first i messages with
`add_generation_prompt=True`, and the turn ends where the template applied to i+1 messages ends.
That works for every template that renders a conversation incrementally (ChatML and most).

    >>> text, spans = render(tokenizer, [{"role": "user", "content": "hi"},
    ...                                  {"role": "assistant", "content": "hello"}])
    >>> [text[s:e] for s, e in spans]
    ['hello<|im_end|>']
"""

from __future__ import annotations

from moai_llm.errors import MoaiInputError


def _apply(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def render(tokenizer, messages: list[dict[str, str]], end_token: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the (start, end) character spans that carry loss."""
    end_token = end_token or _end_token(tokenizer)
    text = _apply(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _apply(tokenizer, messages[:i], True)
        through = _apply(tokenizer, messages[: i + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise MoaiInputError("the tokenizer's chat template does not render conversations incrementally",
                                 hint="use a ChatML template (moai tokenizers carry one)")
        start, end = len(before), len(through)
        cut = through.find(end_token, start) if end_token else -1
        end = cut + len(end_token) if cut >= 0 else len(through.rstrip())
        if end > start:
            spans.append((start, end))
    return text, spans


def _end_token(tokenizer) -> str | None:
    """The token that closes an assistant turn: <|im_end|> when the tokenizer has it, else eos."""
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        return "<|im_end|>"
    return tokenizer.eos_token


def check_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise MoaiInputError("the tokenizer has no chat template, which --mode sft needs",
                             hint="use a tokenizer from `moai tokenizer train` (it carries ChatML)")
