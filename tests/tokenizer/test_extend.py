"""Specification of `extend_tokenizer`: old ids and merge ranks kept, new tokens appended, exactly
N tokens (or a reason), no junk, works on third-party byte-level BPE tokenizer.json files."""

from __future__ import annotations

import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer import train_tokenizer
from moai_llm.tokenizer.bytelevel import from_byte_level
from moai_llm.tokenizer.extend import extend_tokenizer

GENERAL = [
    "The weather is nice today and we walked to the park with friends.",
    "오늘은 날씨가 좋아서 친구들과 공원에 산책을 갔습니다.",
    "She reads a book every evening before going to sleep.",
    "영화가 정말 재미있었고 배우들의 연기도 훌륭했어요.",
] * 40
DOMAIN = [
    "신용카드 할부 수수료율은 연 15.9%이며, 리볼빙 결제금액은 최소 10%입니다.",
    "The credit card installment fee and revolving balance interest are charged monthly.",
    "카드론 금리와 현금서비스 수수료는 신용등급에 따라 다르게 적용됩니다.",
    "Annual percentage rate (APR) applies to the revolving credit balance.",
    "체크카드 캐시백 혜택과 신용카드 포인트 적립률을 비교해 보세요.",
] * 30
HELDOUT = ["We walked to the park.", "친구들과 영화를 봤어요.", "Nice weather today, friends."]


def llama3_style_tokenizer_json(path, texts):
    """A third-party-style byte-level BPE: Llama-3's exact split regex, byte-level BPE trained on
    bytes, special tokens added AFTER the vocabulary (ids at the end) and no tokenizer_config."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def qwen_style_tokenizer_json(path, texts):
    """Qwen-style: NFC normaliser, single-digit split, merges saved as "a b" strings."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=380, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, ensure_ascii=False))
    return path


@pytest.fixture(scope="module")
def moai_base(tmp_path_factory):
    return train_tokenizer(GENERAL, tmp_path_factory.mktemp("base") / "base", vocab_size=420)


def _spec(path):
    path = path / "tokenizer.json" if path.is_dir() else path
    return json.loads(path.read_text())


def _pairs(merges):
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def assert_extension_keeps_base(base_file, out, n):
    from tokenizers import Tokenizer

    old, new = _spec(base_file), _spec(out)
    old_vocab, new_vocab = old["model"]["vocab"], new["model"]["vocab"]
    assert all(new_vocab[t] == i for t, i in old_vocab.items()), "an old token changed id"
    old_merges, new_merges = _pairs(old["model"]["merges"]), _pairs(new["model"]["merges"])
    assert new_merges[: len(old_merges)] == old_merges, "an old merge changed rank"
    assert len(new_merges) > len(old_merges)
    top = max(list(old_vocab.values()) + [t["id"] for t in old.get("added_tokens", [])])
    specials = {t["content"] for t in old.get("added_tokens", [])}
    added = {t: i for t, i in new_vocab.items() if t not in old_vocab and t not in specials}
    assert sorted(added.values()) == list(range(top + 1, top + 1 + len(added))), "new ids not appended"
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size(with_added_tokens=True) == n
    for token in added:  # no junk: each new token is byte-level text that occurs in the domain
        text = from_byte_level(token).decode("utf-8", errors="replace")
        assert any(text.strip("\ufffd") in d for d in DOMAIN), token
    return added


def test_extends_moai_tokenizer_to_exactly_n(moai_base, tmp_path):
    out = tmp_path / "ext"
    report = extend_tokenizer(moai_base, DOMAIN, out, vocab_size=460, heldout=HELDOUT)
    added = assert_extension_keeps_base(moai_base, out, 460)
    assert len(added) == 40 and report["reached"] and report["vocab_size"] == 460
    assert report["domain_compression_gain"] > 0.05
    assert 0.0 <= report["heldout_unchanged"] <= 1.0
    # the folder keeps moai's config and chat template and loads with AutoTokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == 460 and tok.eos_token == "<|endoftext|>" and tok.chat_template
    text = DOMAIN[0] + " 😀 new"
    assert tok.decode(tok.encode(text)) == text


def test_text_without_new_merges_encodes_as_before(moai_base, tmp_path):
    from tokenizers import Tokenizer

    out = tmp_path / "ext"
    extend_tokenizer(moai_base, DOMAIN, out, vocab_size=460)
    old = Tokenizer.from_file(str(moai_base / "tokenizer.json"))
    new = Tokenizer.from_file(str(out / "tokenizer.json"))
    for line in GENERAL[:4]:
        assert new.encode(line).ids == old.encode(line).ids


def test_llama3_style_third_party_tokenizer(tmp_path):
    base = llama3_style_tokenizer_json(tmp_path / "llama" / "tokenizer.json", GENERAL)
    out = tmp_path / "ext"
    report = extend_tokenizer(base, DOMAIN, out, vocab_size=450)
    added = assert_extension_keeps_base(base, out, 450)
    assert len(added) == 450 - 403
    assert report["reached"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 402  # special ids untouched
    assert tok.decode(tok.encode(DOMAIN[2])) == DOMAIN[2]


def test_qwen_style_string_merges(tmp_path):
    base = qwen_style_tokenizer_json(tmp_path / "qwen.json", GENERAL)
    out = tmp_path / "ext"
    extend_tokenizer(base, DOMAIN, out, vocab_size=420)
    assert_extension_keeps_base(base, out, 420)
    assert all(isinstance(m, str) for m in _spec(out)["model"]["merges"])


def test_says_why_it_cannot_reach_n(moai_base, tmp_path):
    report = extend_tokenizer(moai_base, DOMAIN[:5], tmp_path / "ext", vocab_size=5000)
    assert not report["reached"] and report["vocab_size"] < 5000
    assert "more domain text" in report["reason"]


def test_refuses_vocab_not_larger_than_base(moai_base, tmp_path):
    with pytest.raises(MoaiInputError, match="not larger than"):
        extend_tokenizer(moai_base, DOMAIN, tmp_path / "ext", vocab_size=300)
    assert not (tmp_path / "ext").exists()


def test_refuses_non_byte_level_bpe(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(GENERAL, trainer=trainers.UnigramTrainer(vocab_size=100, show_progress=False))
    tok.save(str(tmp_path / "sp.json"))
    with pytest.raises(MoaiInputError, match="not a byte-level BPE"):
        extend_tokenizer(tmp_path / "sp.json", DOMAIN, tmp_path / "ext", vocab_size=500)
    assert not (tmp_path / "ext").exists()


def test_extension_never_writes_over_or_around_its_base(moai_base, tmp_path):
    import shutil

    base = shutil.copytree(moai_base, tmp_path / "t" / "base")
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    for out in (base, base / "inside", tmp_path / "t"):
        with pytest.raises(MoaiInputError, match="base"):
            extend_tokenizer(base, DOMAIN, out, vocab_size=460)
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before
    extend_tokenizer(base / "tokenizer.json", DOMAIN, tmp_path / "t" / "next", vocab_size=460)  # beside it: fine


def test_negative_min_frequency_is_refused(moai_base, tmp_path):
    with pytest.raises(MoaiInputError, match="--min-frequency -3: must be 0 or more"):
        extend_tokenizer(moai_base, DOMAIN, tmp_path / "ext", vocab_size=460, min_frequency=-3)


def test_a_base_naming_code_is_extended_without_running_or_keeping_it(moai_base, tmp_path):
    import shutil

    from faults import make_hostile

    base = make_hostile(shutil.copytree(moai_base, tmp_path / "hostile"))
    extend_tokenizer(base, DOMAIN, tmp_path / "ext", vocab_size=460)
    config = json.loads((tmp_path / "ext" / "tokenizer_config.json").read_text())
    assert "auto_map" not in config and config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not (tmp_path / "ext" / "evil.py").exists()
    extend_tokenizer(base, DOMAIN, tmp_path / "trusted", vocab_size=460, trust_remote_code=True)
    assert (tmp_path / "trusted" / "evil.py").is_file()  # copied along, as the user asked
    assert "auto_map" in json.loads((tmp_path / "trusted" / "tokenizer_config.json").read_text())
    assert not (base / "MARKER").exists()  # copying is not running
