"""Special tokens and the ChatML chat template every moai tokenizer carries.

The four special tokens always take ids 0..3 (endoftext, im_start, im_end, pad), so prepared
data, models and chat agree on them whatever the vocabulary size. The template is ChatML, the
format Qwen uses: a prompt built with `add_generation_prompt=True` ends with
"<|im_start|>assistant\\n" and never with an end token.

    >>> from moai_llm.tokenizer.special import SPECIAL_TOKENS
    >>> SPECIAL_TOKENS[0]
    '<|endoftext|>'
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"

# Order is the id order (0, 1, 2, 3): the trainer assigns ids to special tokens first.
SPECIAL_TOKENS: list[str] = [ENDOFTEXT, IM_START, IM_END, PAD]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
