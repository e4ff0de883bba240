"""Specification of the character-level → byte-level BPE rewrite: on text made of alphabet
characters the byte-level model splits exactly like the character model; other characters fall
back to bytes; the vocabulary size is respected."""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from moai_llm.tokenizer.bytelevel import (
    bytes_to_unicode,
    char_bpe_to_byte_level,
    from_byte_level,
    to_byte_level,
)
from moai_llm.tokenizer.train import SPLIT_PATTERN, new_tokenizer

TEXTS = ["금리 인상과 환율 변동이 시장에 미치는 영향", "interest rates and exchange rates move markets",
         "은행 예금 금리는 연 3.5%입니다", "日本銀行の金利政策"] * 30


def char_model():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=400, show_progress=False))
    return tok


def test_byte_symbols_are_gpt2s_reversible_map():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord("A")] == "A" and table[32] == "Ġ"
    assert from_byte_level(to_byte_level("é 한 😀")) == "é 한 😀".encode()


def test_byte_level_model_splits_like_the_character_model():
    chars = char_model()
    spec = json.loads(chars.to_str())["model"]
    alphabet = [t for t in spec["vocab"] if len(t) == 1]
    vocab, merges = char_bpe_to_byte_level(alphabet, [tuple(m) for m in spec["merges"]], ["<s>"], 10_000)
    byte_tok = new_tokenizer(models.BPE(vocab=vocab, merges=merges))
    for text in set(TEXTS) | {"금리 변동", "markets rates"}:
        expected = [to_byte_level(t) for t in chars.encode(text).tokens]
        assert byte_tok.encode(text).tokens == expected, text
        assert byte_tok.decode(byte_tok.encode(text).ids) == text


def test_unknown_characters_fall_back_to_bytes_and_round_trip():
    chars = char_model()
    spec = json.loads(chars.to_str())["model"]
    alphabet = [t for t in spec["vocab"] if len(t) == 1]
    vocab, merges = char_bpe_to_byte_level(alphabet, [tuple(m) for m in spec["merges"]], [], 10_000)
    tok = new_tokenizer(models.BPE(vocab=vocab, merges=merges))
    text = "금리 🦄 ꙮ 𝔘"
    assert tok.decode(tok.encode(text).ids) == text


def test_vocabulary_size_is_a_hard_limit_and_small_sizes_build_characters_on_demand():
    chars = char_model()
    spec = json.loads(chars.to_str())["model"]
    alphabet = [t for t in spec["vocab"] if len(t) == 1]
    for size in (260, 300, 350):
        vocab, merges = char_bpe_to_byte_level(alphabet, [tuple(m) for m in spec["merges"]], ["<s>"], size)
        assert len(vocab) == size
        assert all(a + b in vocab for a, b in merges)
        assert sorted(vocab.values()) == list(range(size))
