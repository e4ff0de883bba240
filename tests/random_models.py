"""Random-weight Qwen3 model folders, for trying `moai chat` and measuring it without training.

A random model writes gibberish, but it exercises everything a trained one does: loading,
the chat template, the KV cache, streaming, stop tokens. Tests and `benchmarks/bench_chat.py`
build theirs with this, so both measure the same kind of folder a training run writes.

    >>> from random_models import write_random_model
    >>> write_random_model("/tmp/tiny-chat", hidden_size=64, num_layers=2)  # doctest: +SKIP
    PosixPath('/tmp/tiny-chat')
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SAMPLE_TEXTS = [
    "Hello, how are you today? I am fine, thank you.",
    "The interest rate rose by 0.25 percentage points this quarter.",
    "안녕하세요. 오늘 날씨가 정말 좋네요! 금리가 올랐습니다.",
    "이 영화 정말 재미있어요 😀 다시 보고 싶어요.",
    "こんにちは、元気ですか。今日はいい天気です。",
    "你好，今天天气很好。银行利率上升了。",
    "Emoji test: 🚀🌏✨ and accents: café, naïve, über.",
]


def write_tokenizer(output_dir: str | Path, texts: Iterable[str] | None = None,
                    vocab_size: int = 512) -> Path:
    """Train a small moai tokenizer (ChatML template, special ids 0..3) into `output_dir`."""
    from moai_llm.tokenizer import train_tokenizer

    texts = list(texts) if texts is not None else SAMPLE_TEXTS * 50
    return Path(train_tokenizer(texts, output_dir, vocab_size=vocab_size))


def write_random_model(
    output_dir: str | Path, tokenizer_dir: str | Path | None = None, hidden_size: int = 64,
    num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int | None = None,
    context_length: int = 512, vocab_size: int = 512, seed: int = 0,
) -> Path:
    """Write a random Qwen3 model folder (config.json, model.safetensors, tokenizer).

    Uses `tokenizer_dir` when given, else trains a `vocab_size` tokenizer on built-in
    multilingual sample sentences. The embedding has exactly one row per tokenizer entry.
    """
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer_dir = write_tokenizer(output_dir, vocab_size=vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads, intermediate_size=intermediate_size or 3 * hidden_size,
        max_position_embeddings=context_length, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(output_dir)
    if Path(tokenizer_dir).resolve() != output_dir.resolve():
        tokenizer.save_pretrained(output_dir)
    return output_dir
