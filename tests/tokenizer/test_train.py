"""Specification of `moai_llm.tokenizer.train`: a byte-level tokenizer folder that transformers
loads, with fixed special-token ids, ChatML, no added BOS/EOS and lossless round-trips."""

from __future__ import annotations

import json
import unicodedata

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer import load_tokenizer, train_tokenizer
from moai_llm.tokenizer.special import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START, PAD

TEXTS = [
    "The quick brown fox jumps over the lazy dog. 2024년 3분기 매출은 1,234억 원입니다.",
    "금융 상품의 이자율은 연 3.5%이며, 만기는 12개월입니다. Interest is paid monthly.",
    "def add(a, b):\n    return a + b  # adds two numbers\n",
    "東京の天気は晴れです。上海今天下雨。 Emoji: 😀🎉👨‍👩‍👧",
] * 60

ROUND_TRIP = [
    "",
    "hello",
    " leading space",
    "trailing space ",
    "double  space\tand\ttabs\r\nwindows newline",
    "control \x00\x01\x07\x1b[31m chars \x7f",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇰🇷🇯🇵",
    "한국어와 English와 日本語と中文混合 text",
    "完全に未知の文字: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ ᚠᛇᚻ",
    "for (int i = 0; i < n; ++i) { sum += a[i] * 0x1F; }\n\n\n",
    "  <|not_special|> <|endoftext",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("tok") / "tiny", vocab_size=400)


def test_folder_loads_with_autotokenizer_and_has_fixed_special_ids(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END, PAD]) == [0, 1, 2, 3]
    assert tok.eos_token == ENDOFTEXT and tok.pad_token == PAD
    assert tok.eos_token_id == 0 and tok.pad_token_id == 3
    assert len(tok) == 400


def test_config_carries_chat_template_and_no_space_cleanup(tok_dir):
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert cfg["clean_up_tokenization_spaces"] is False
    assert cfg["eos_token"] == ENDOFTEXT and cfg["pad_token"] == PAD


def test_plain_encode_adds_no_bos_or_eos(tok_dir):
    tok = load_tokenizer(tok_dir)
    ids = tok("hello world")["input_ids"]
    assert ids == tok.encode("hello world")
    assert ids and ids[0] > 3 and ids[-1] > 3


def test_chat_template_ends_with_assistant_prompt(tok_dir):
    tok = load_tokenizer(tok_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "안녕?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n안녕?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok.encode(text)
    assert ids[-3:] != [2] and tok.convert_ids_to_tokens(ids[0]) == IM_START
    assert ids.count(1) == 3 and ids.count(2) == 2


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_encode_round_trips_nfc_text(tok_dir, text):
    tok = load_tokenizer(tok_dir)
    text = unicodedata.normalize("NFC", text)
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_of_every_byte_value(tok_dir):
    tok = load_tokenizer(tok_dir)
    text = "".join(chr(c) for c in range(1, 0x250))
    assert tok.decode(tok.encode(text)) == text


def test_training_learns_frequent_words(tok_dir):
    tok = load_tokenizer(tok_dir)
    # A word repeated 240 times in training becomes far fewer tokens than its bytes.
    assert len(tok.encode(" brown fox jumps")) <= len(" brown fox jumps") // 2


@pytest.mark.parametrize("mode", ["default", "fast", "turbo", "ultrafast"])
def test_every_mode_trains_a_lossless_tokenizer(tmp_path, mode):
    out = train_tokenizer(TEXTS, tmp_path / mode, vocab_size=350, mode=mode)
    tok = load_tokenizer(out)
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text)) == text
    assert tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END, PAD]) == [0, 1, 2, 3]


def test_empty_input_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(MoaiInputError, match="no text"):
        train_tokenizer(["", ""], tmp_path / "out", vocab_size=300)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_too_small_vocab_is_refused(tmp_path):
    with pytest.raises(MoaiInputError, match="at least 260"):
        train_tokenizer(TEXTS, tmp_path / "out", vocab_size=100)


def test_retraining_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "tok"
    train_tokenizer(TEXTS, out, vocab_size=300)
    train_tokenizer(TEXTS, out, vocab_size=320)
    assert len(load_tokenizer(out)) == 320
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_retraining_never_deletes_a_file_added_to_the_folder(tmp_path):
    """moai's own tokenizer folder with a file moai did not write in it is no longer provably
    moai's alone: replacing it whole would delete that file, so it is refused."""
    from moai_llm.errors import MoaiInputError

    out = tmp_path / "tok"
    train_tokenizer(TEXTS, out, vocab_size=300)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(MoaiInputError, match="also holds files moai did not make \\(notes.txt\\)"):
        train_tokenizer(TEXTS, out, vocab_size=320)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_sources_are_interleaved_so_every_language_reaches_the_alphabet(tmp_path, monkeypatch):
    import random

    from moai_llm.tokenizer import train as train_module
    from moai_llm.tokenizer.text_streams import TextSource

    # Only the first batch (1000 texts) chooses the alphabet here; Chinese is the second source.
    monkeypatch.setattr(train_module, "PEEK_CHARS", 300)
    rng = random.Random(0)
    ko_chars = [chr(0xAC00 + 7 * i) for i in range(60)]
    zh_chars = [chr(0x4E00 + 13 * i) for i in range(60)]

    def texts(chars):
        return ["".join(rng.choice(chars) for _ in range(8)) + " " for _ in range(1500)]

    ko, zh = texts(ko_chars), texts(zh_chars)
    sources = [TextSource("ko", None, lambda: iter(ko)), TextSource("zh", None, lambda: iter(zh))]
    tok = load_tokenizer(train_tokenizer(sources, tmp_path / "t", vocab_size=1000))
    assert all(len(tok.encode(ch)) == 1 for ch in ko_chars + zh_chars)


def test_sampling_modes_keep_small_sources_whole():
    from moai_llm.tokenizer.train import KEEP_WHOLE_BYTES, _keep_rates

    big, small = 100 * KEEP_WHOLE_BYTES, KEEP_WHOLE_BYTES // 2
    rates = _keep_rates([big, small, None], budget=10 * KEEP_WHOLE_BYTES)
    assert rates[1] == 1.0 and rates[2] == 1.0
    assert rates[0] == pytest.approx(10 / 100.5, rel=1e-3)
    assert _keep_rates([small], budget=KEEP_WHOLE_BYTES) == [1.0]


def test_negative_min_frequency_is_refused_before_reading(tmp_path):
    def never():
        raise AssertionError("the input was read")
        yield ""

    with pytest.raises(MoaiInputError, match="--min-frequency -3: must be 0 or more"):
        train_tokenizer(never(), tmp_path / "tok", vocab_size=300, min_frequency=-3)
    assert list(tmp_path.iterdir()) == []


def test_a_huge_vocabulary_is_refused_before_reading_with_what_fits(tmp_path):
    from moai_llm.errors import NotEnoughMemoryError

    def never():
        raise AssertionError("the input was read")
        yield ""

    with pytest.raises(NotEnoughMemoryError) as err:
        train_tokenizer(never(), tmp_path / "tok", vocab_size=1_000_000_000)
    assert "--vocab-size 1000000000: needs about 88.4 GiB of memory" in str(err.value)
    assert err.value.largest is not None and err.value.largest % 64 == 0 and err.value.largest < 10**9
    assert list(tmp_path.iterdir()) == []


def test_second_training_into_the_same_folder_is_refused_and_leftovers_go(tmp_path):
    from moai_llm.errors import FolderInUseError
    from moai_llm.locks import RunLock

    (tmp_path / ".tok.building-deadbeef").mkdir()  # what a killed run leaves
    with RunLock(tmp_path / "tok", command="moai tokenizer train"), \
            pytest.raises(FolderInUseError, match="tok is in use by moai tokenizer train"):
        train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]
