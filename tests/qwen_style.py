"""Model and tokenizer folders shaped like the ones teams download from the hub, not moai's own.

`write_qwen_style_model` writes what stock transformers saves for a Qwen3 checkpoint:
`Qwen3ForCausalLM(...).save_pretrained` (config.json, model.safetensors, generation_config.json)
and a tokenizer saved with `save_pretrained`. Its tokenizer is built the way Qwen's is: a
byte-level BPE (Qwen's pre-tokenizer regex, NFC) whose special tokens `<|endoftext|>`,
`<|im_start|>`, `<|im_end|>` (and `<think>`, `</think>`) come AFTER the base vocabulary, with a
Qwen3-style chat template (thinking blocks). Like Qwen's checkpoints, the embedding matrix has
more rows than the tokenizer has tokens (vocab_size padded up).

    >>> from qwen_style import write_qwen_style_model
    >>> folder = write_qwen_style_model("/tmp/qwen-like")              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from random_models import SAMPLE_TEXTS

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# Qwen3-style: assistant turns after the last user message show their reasoning inside
# <think>...</think> (the last one an empty block when there is none); earlier turns lose it; with
# enable_thinking=false the generation prompt carries an empty think block.
QWEN3_TEMPLATE = """\
{%- set ns = namespace(last_query=messages|length - 1, found=false) %}
{%- for m in messages[::-1] %}
  {%- if not ns.found and m.role == 'user' %}
    {%- set ns.found = true %}{%- set ns.last_query = messages|length - 1 - loop.index0 %}
  {%- endif %}
{%- endfor %}
{%- for message in messages %}
  {%- if message.role == 'assistant' %}
    {%- set content = message.content %}
    {%- set reasoning = '' %}
    {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
      {%- set reasoning = message.reasoning_content %}
    {%- elif '</think>' in content %}
      {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
      {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
    {%- endif %}
    {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
    {%- else %}
      {{- '<|im_start|>assistant\\n' + content }}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
  {%- else %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}"""

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]
LLAMA3_TEMPLATE = """\
{{- bos_token }}
{%- for message in messages %}
  {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""


def _train_bpe(texts: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE trained with Qwen's pre-tokenizer, no specials."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def write_qwen_style_tokenizer(output_dir: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 600,
                               template: str = QWEN3_TEMPLATE, specials: list[str] | None = None,
                               eos_token: str = "<|im_end|>", bos_token: str | None = None) -> Path:
    """A Qwen2Tokenizer folder: trained byte-level BPE, then special tokens appended after it."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(texts if texts is not None else SAMPLE_TEXTS * 50, vocab_size)
    specials = list(specials if specials is not None else QWEN_SPECIALS)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None, pad_token=None)
    base = len(tok)
    tok.add_special_tokens({"additional_special_tokens": specials})
    if template == QWEN3_TEMPLATE:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tok.eos_token = eos_token
    tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in specials else eos_token
    tok.bos_token = bos_token
    tok.chat_template = template
    assert all(tok.convert_tokens_to_ids(s) >= base for s in specials), "specials must follow the base vocabulary"
    out = Path(output_dir)
    tok.save_pretrained(out)
    return out


def write_qwen_style_model(output_dir: str | Path, tokenizer_dir: str | Path | None = None, hidden_size: int = 64,
                           num_layers: int = 2, padded_rows: int = 64, tie: bool = True, seed: int = 0) -> Path:
    """Stock `Qwen3ForCausalLM.save_pretrained` + tokenizer; `padded_rows` embedding rows beyond
    the tokenizer (at least one)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else write_qwen_style_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False)
    rows = len(tok) + max(1, padded_rows)
    endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen3Config(vocab_size=rows, hidden_size=hidden_size, intermediate_size=3 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden_size // 4, max_position_embeddings=512, tie_word_embeddings=tie,
                         bos_token_id=endoftext, eos_token_id=im_end, rope_theta=1_000_000.0)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=endoftext, eos_token_id=[im_end, endoftext],
                                               pad_token_id=endoftext, do_sample=True, temperature=0.6,
                                               top_p=0.95, top_k=20)
    model.save_pretrained(out)
    if tok_dir.resolve() != out.resolve():
        tok.save_pretrained(out)
    return out
