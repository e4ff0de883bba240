"""Specification of `compare_tokenizers`: compression figures that add up, byte fallback counted
for partial characters and `<0xNN>` tokens, clear errors for folders without tokenizers."""

from __future__ import annotations

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer import train_tokenizer
from moai_llm.tokenizer.compare import (
    compare_tokenizers,
    default_text_sets,
    find_tokenizers,
    measure,
)

KO = ["금리가 오르면 대출 이자도 오릅니다.", "카드 결제일은 매월 25일입니다."] * 50


@pytest.fixture(scope="module")
def ko_tok(tmp_path_factory):
    return train_tokenizer(KO, tmp_path_factory.mktemp("t") / "tokenizers" / "ko", vocab_size=400)


def test_figures_are_consistent(ko_tok):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ko_tok / "tokenizer.json"))
    m = measure(tok, KO[:2])
    tokens = sum(len(tok.encode(t).ids) for t in KO[:2])
    assert m["tokens"] == tokens
    assert m["chars_per_token"] == pytest.approx(sum(map(len, KO[:2])) / tokens)
    assert m["bytes_per_token"] == pytest.approx(sum(len(t.encode()) for t in KO[:2]) / tokens)
    assert m["round_trip"] == 1.0 and m["encode_mb_s"] > 0


def test_unseen_script_shows_as_byte_fallback(ko_tok):
    rows = compare_tokenizers([ko_tok], {"ko": KO[:2], "zh": ["中文文本测试，完全没有见过的字。"]})
    by_set = {r["set"]: r for r in rows}
    assert by_set["ko"]["byte_fallback"] < 0.05
    assert by_set["zh"]["byte_fallback"] > 0.9
    assert by_set["zh"]["round_trip"] == 1.0


def test_sentencepiece_style_byte_tokens_count_as_fallback(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "▁a": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Metaspace()])
    tok.save(str(tmp_path / "tokenizer.json"))
    row = compare_tokenizers([tmp_path], {"x": ["é"]})[0]
    assert row["byte_fallback"] > 0.5


def test_default_sets_are_the_embedded_held_out_corpora():
    sets = default_text_sets(max_docs=3)
    assert sorted(sets) == ["en", "ja", "ko", "zh"] and all(len(v) == 3 for v in sets.values())


def test_find_tokenizers(ko_tok, tmp_path):
    assert find_tokenizers(ko_tok.parent) == [ko_tok]
    with pytest.raises(MoaiInputError, match="no tokenizer folders"):
        find_tokenizers(tmp_path)
    with pytest.raises(MoaiInputError, match="not a tokenizer folder"):
        compare_tokenizers([tmp_path], {"x": ["a"]})


def test_a_folder_naming_code_is_compared_from_its_tokenizer_json(ko_tok, tmp_path, capsys):
    import shutil

    from faults import make_hostile

    hostile = make_hostile(shutil.copytree(ko_tok, tmp_path / "hostile"))
    rows = compare_tokenizers([ko_tok, hostile], {"ko": KO[:10]})
    assert rows[0]["chars_per_token"] == rows[1]["chars_per_token"]
    assert "names Python code" in capsys.readouterr().err and not (hostile / "MARKER").exists()
    (hostile / "tokenizer.json").unlink()
    with pytest.raises(MoaiInputError, match="defined by Python code"):
        compare_tokenizers([hostile], {"ko": KO[:10]})
    assert not (hostile / "MARKER").exists()
