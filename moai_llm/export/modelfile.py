"""An Ollama Modelfile whose template, stops and sampling are the model's own.

Ollama renders prompts with Go's text/template, not Jinja, so the model's chat template is
translated. A template is recognised by what it renders (through transformers' own Jinja
renderer), not by its text: probe conversations must come out as ChatML, the format moai and
Qwen train with. Two families are translated:
- `chatml`: every message as `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`, then
  `<|im_start|>assistant\\n` (moai's template, Qwen2.5's without tools);
- `qwen3`: the same, plus Qwen3's thinking blocks: an assistant turn after the last user message
  shows its reasoning as `<think>\\n...\\n</think>\\n\\n` (Ollama's `.Thinking`), earlier turns
  lose it, and a request with thinking off (`think: false`) opens the answer with an empty block.
Any other template is refused (exit 2) rather than guessed. The translation is checked
byte-for-byte against the Jinja rendering with Go's text/template in tests/export.

`PARAMETER stop` lists every end token (`<|im_end|>`, `<|endoftext|>`): Ollama stops only on
what the Modelfile lists. Sampling comes from generation_config.json (greedy there: temperature 0).

    >>> modelfile("m.gguf", "chatml", ["<|im_end|>"], {"temperature": 0.7}).splitlines()[-2:]
    ['PARAMETER temperature 0.7', 'PARAMETER stop "<|im_end|>"']
"""

from __future__ import annotations

import json
from typing import Any

from moai_llm.errors import MoaiInputError

HEADER = "# Modelfile written by moai export"
_TURN = "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"

CHATML_TEMPLATE = (
    "{{ range $i, $_ := .Messages }}"
    "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    "{{ if or (ne .Role \"assistant\") (not $last) }}" + _TURN +
    "{{ else }}<|im_start|>assistant\n{{ .Content }}{{ end }}"
    "{{ if and $last (ne .Role \"assistant\") }}<|im_start|>assistant\n{{ end }}"
    "{{ end }}"
)

QWEN3_TEMPLATE = (
    "{{ $lastUser := -1 }}"
    "{{ range $i, $m := .Messages }}{{ if eq $m.Role \"user\" }}{{ $lastUser = $i }}{{ end }}{{ end }}"
    "{{ range $i, $_ := .Messages }}"
    "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    "{{ if eq .Role \"assistant\" }}<|im_start|>assistant\n"
    "{{ if and (gt $i $lastUser) (or $last .Thinking) }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}"
    "{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}"
    "{{ else }}" + _TURN + "{{ end }}"
    "{{ if and $last (ne .Role \"assistant\") }}<|im_start|>assistant\n"
    "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}{{ end }}"
    "{{ end }}"
)
TEMPLATES = {"chatml": CHATML_TEMPLATE, "qwen3": QWEN3_TEMPLATE}

# Conversations the recognition renders (ending with a user turn, as every chat request does).
PROBES = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "안녕?"},
     {"role": "assistant", "content": "네."}, {"role": "user", "content": "2+2?"}],
]


def chatml(messages: list[dict], generation_prompt: bool = True) -> str:
    """What a ChatML template renders for `messages`."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def _render(tokenizer: Any, messages: list[dict], **kwargs: Any) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:  # a template that fails on plain conversations is not one we translate
        return None


def template_family(tokenizer: Any) -> str:
    """"chatml" or "qwen3" for a tokenizer whose chat template renders as that family does;
    MoaiInputError otherwise."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise MoaiInputError("--format ollama: the tokenizer has no chat template to translate",
                             hint="export --format gguf (plain completion), or add a ChatML template")
    if all(_render(tokenizer, p) == chatml(p) for p in PROBES):
        if "<think>" not in str(template):
            return "chatml"
        off = _render(tokenizer, PROBES[0], enable_thinking=False)
        if off == chatml(PROBES[0]) + "<think>\n\n</think>\n\n":
            return "qwen3"
    raise MoaiInputError("--format ollama: the chat template is not ChatML (moai's or Qwen's), the formats moai "
                         "translates to Ollama's Go template", hint="export --format gguf; llama.cpp runs the "
                         "Jinja template embedded in the GGUF")


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def sampling(generation_config: Any) -> dict[str, Any]:
    """Ollama PARAMETERs from a transformers GenerationConfig (greedy: temperature 0)."""
    if generation_config is None:
        return {}
    params: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                         ("repetition_penalty", "repeat_penalty"), ("min_p", "min_p")):
        value = getattr(generation_config, ours, None)
        if value is not None:
            params[theirs] = value
    if getattr(generation_config, "do_sample", None) is False:
        params = {k: v for k, v in params.items() if k == "repeat_penalty"} | {"temperature": 0}
    return params


def modelfile(gguf_name: str, family: str, stops: list[str], params: dict[str, Any], system: str | None = None) -> str:
    """The Modelfile text for `gguf_name` (a file beside it)."""
    lines = [HEADER, f"FROM ./{gguf_name}", "", f'TEMPLATE """{TEMPLATES[family]}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines.append("")
    lines += [f"PARAMETER {k} {v}" for k, v in params.items()]
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    return "\n".join(lines) + "\n"
