"""The tokenizer as GGUF metadata: tokens, their types, merges, special ids and chat template.

llama.cpp rebuilds the tokenizer from these keys alone, so every one is taken from what the
model was trained with:
- one token per embedding row (rows past the tokenizer's last id are `[PADn]`, unused), typed
  CONTROL for special tokens, USER_DEFINED for other added tokens (`<think>`), NORMAL otherwise;
- the BPE merges in rank order and the pre-tokenizer `pretokenizer.recognise` found;
- the end of a turn: a chat model (its template closes turns with `<|im_end|>`) gets
  `<|im_end|>` as eos *and* eot, so llama.cpp and Ollama stop where training taught it to;
  `<|endoftext|>` is end-of-generation in llama.cpp by its text, and a Modelfile lists both;
- bos/eos are added to a prompt only when the tokenizer adds them (Qwen and moai add none).

    >>> meta = TokenizerMeta(tokens=["a"], types=[1], merges=[], pre="llama-bpe", bos=None, eos=0,
    ...                      eot=None, pad=None, add_bos=False, add_eos=False, chat_template=None, end_tokens=["a"])
    >>> meta.eos
    0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

CHAT_END = "<|im_end|>"
END_TEXTS = (CHAT_END, "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>")
# gguf.TokenType values (kept here so this module imports without the gguf package)
NORMAL, UNUSED, CONTROL, USER_DEFINED = 1, 5, 3, 4


@dataclass(frozen=True)
class TokenizerMeta:
    tokens: list[str]  # one per embedding row
    types: list[int]  # gguf.TokenType per token
    merges: list[str]  # "left right", in rank order
    pre: str  # tokenizer.ggml.pre
    bos: int | None
    eos: int | None
    eot: int | None  # end of a chat turn (chat models)
    pad: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    end_tokens: list[str]  # every token that ends generation (Modelfile stops)


def tokenizer_spec(tokenizer: Any) -> dict:
    """The tokenizer.json of a loaded fast tokenizer (what `tokenizers` would save)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise MoaiInputError("the tokenizer has no tokenizer.json form (a slow, Python-only tokenizer)",
                             hint="save it with a fast tokenizer (tokenizer.json) first")
    return json.loads(backend.to_str())


def _id_to_token(spec: dict) -> dict[int, tuple[str, int]]:
    """id -> (text, token type) over the model vocabulary and the added tokens."""
    table = {int(i): (t, NORMAL) for t, i in (spec.get("model") or {}).get("vocab", {}).items()}
    for added in spec.get("added_tokens") or []:
        table[int(added["id"])] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    return table


def _merges(spec: dict) -> list[str]:
    merges = (spec.get("model") or {}).get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _adds(tokenizer: Any, token_id: int | None, first: bool) -> bool:
    """True when the tokenizer puts `token_id` at the start (first) or end of every encoding."""
    if token_id is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id and ids != tokenizer("x", add_special_tokens=False)["input_ids"]


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


def tokenizer_meta(tokenizer: Any, spec: dict, pre: str, rows: int, generation_config: Any = None,
                   config_bos: int | None = None) -> TokenizerMeta:
    """GGUF tokenizer metadata for `tokenizer` (its tokenizer.json `spec`) and a model with
    `rows` embedding rows."""
    table = _id_to_token(spec)
    if table and max(table) >= rows:
        raise MoaiInputError(f"the tokenizer has ids up to {max(table)} but the model has {rows} embedding rows",
                             hint="use the tokenizer the model was trained with")
    tokens = [table.get(i, (f"[PAD{i}]", UNUSED))[0] for i in range(rows)]
    types = [table.get(i, ("", UNUSED))[1] for i in range(rows)]
    vocab = {t: i for i, (t, _) in table.items()}
    template = _chat_template(tokenizer)
    chat_end = vocab.get(CHAT_END) if template and CHAT_END in template else None
    eos = chat_end if chat_end is not None else tokenizer.eos_token_id
    if eos is None:
        eos = vocab.get("<|endoftext|>")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config_bos
    if bos is None:
        bos = vocab.get("<|endoftext|>")
    ends = {eos} | {vocab[t] for t in END_TEXTS if t in vocab}
    gen_eos = getattr(generation_config, "eos_token_id", None)
    ends.update([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or []))
    end_tokens = [table[i][0] for i in sorted(i for i in ends if i is not None and i in table)]
    return TokenizerMeta(
        tokens=tokens, types=types, merges=_merges(spec), pre=pre, bos=bos, eos=eos, eot=chat_end,
        pad=tokenizer.pad_token_id, add_bos=_adds(tokenizer, tokenizer.bos_token_id, True),
        add_eos=_adds(tokenizer, tokenizer.eos_token_id, False), chat_template=template, end_tokens=end_tokens)


def write_tokenizer_meta(writer: Any, meta: TokenizerMeta) -> None:
    """Add `meta` to a gguf.GGUFWriter."""
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(meta.pre)
    writer.add_token_list(meta.tokens)
    writer.add_token_types(meta.types)
    writer.add_token_merges(meta.merges)
    for add, value in ((writer.add_bos_token_id, meta.bos), (writer.add_eos_token_id, meta.eos),
                       (writer.add_eot_token_id, meta.eot), (writer.add_pad_token_id, meta.pad)):
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(meta.add_bos)
    writer.add_add_eos_token(meta.add_eos)
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)


def read_generation_config(model_dir: Path) -> Any:
    """generation_config.json of `model_dir` as a transformers GenerationConfig, or None."""
    if not (model_dir / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise MoaiInputError(f"{model_dir / 'generation_config.json'}: unreadable ({exc})") from None
