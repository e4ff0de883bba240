"""Specification of moai's shipped corpora: present, sized, clean text in the right script,
deterministic disjoint splits, and finance Q&A whose computed answers add up."""

from __future__ import annotations

import math
import unicodedata
from decimal import Decimal

import orjson
import pytest

from moai_llm import corpora

# Text bytes per language: Korean and English are what the quickstart uses most.
MIN_KIB = {"ko": 90, "en": 85, "ja": 55, "zh": 50}


def script_share(text: str, predicate) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(map(predicate, letters)) / len(letters)


def is_hangul(c: str) -> bool:
    return "\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff" or "\u3130" <= c <= "\u318f"


def is_kana(c: str) -> bool:
    return "\u3040" <= c <= "\u30ff"


def is_han(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def test_languages_are_the_four_shipped_ones():
    assert corpora.languages() == ["ko", "en", "ja", "zh"]


@pytest.mark.parametrize("lang", ["ko", "en", "ja", "zh"])
def test_each_language_is_a_nontrivial_valid_utf8_nfc_corpus(lang):
    raw = corpora.path(lang).read_bytes()
    raw.decode("utf-8")  # raises on invalid UTF-8
    docs = list(corpora.iter_texts(lang, split="all"))
    size_kib = sum(len(d.encode()) for d in docs) / 1024
    assert size_kib >= MIN_KIB[lang], f"{lang}: only {size_kib:.1f} KiB of text"
    assert len(docs) >= 40
    for doc in docs:
        assert doc == doc.strip() and doc
        assert unicodedata.is_normalized("NFC", doc)
        assert 1 <= len(doc.split("\n")) <= 8
    assert len(set(docs)) == len(docs), "duplicate documents"


@pytest.mark.parametrize("lang", ["ko", "en", "ja", "zh"])
def test_most_text_is_hand_written_prose(lang):
    records = list(corpora.iter_records(lang))
    assert {r["origin"] for r in records} == {"written", "generated"}
    written = sum(len(r["text"].encode()) for r in records if r["origin"] == "written")
    total = sum(len(r["text"].encode()) for r in records)
    assert written / total > 0.7


def test_shipped_generated_records_match_the_committed_generators():
    """`build.py generate` is reproducible: the shipped generated records are what it makes."""
    from moai_llm.corpora.build import clean
    from moai_llm.corpora.calc_qa import computed_qa
    from moai_llm.corpora.text_templates import generated_texts

    for lang in corpora.languages():
        shipped = [r["text"] for r in corpora.iter_records(lang) if r["origin"] == "generated"]
        assert shipped == [clean(d) for d in generated_texts(lang, seed=0)]
    shipped_qa = [r for r in corpora.iter_records("finance_qa") if r["origin"] == "computed"]
    assert [r["input"] for r in shipped_qa] == [clean(r["input"]) for r in computed_qa(seed=0, per_kind=20)]


def test_scripts_match_the_language():
    ko = " ".join(corpora.iter_texts("ko", "all"))
    ja = " ".join(corpora.iter_texts("ja", "all"))
    zh = " ".join(corpora.iter_texts("zh", "all"))
    en = " ".join(corpora.iter_texts("en", "all"))
    assert script_share(ko, is_hangul) > 0.9
    assert script_share(ja, is_kana) > 0.3 and script_share(ja, lambda c: is_kana(c) or is_han(c)) > 0.95
    assert script_share(zh, is_han) > 0.95 and script_share(zh, is_kana) == 0
    assert script_share(en, lambda c: c.isascii()) > 0.99
    for doc in corpora.iter_texts("ja", "all"):
        assert any(map(is_kana, doc)), doc[:40]


@pytest.mark.parametrize("lang", ["ko", "en", "ja", "zh"])
def test_splits_are_disjoint_deterministic_and_cover_the_file(lang):
    train = list(corpora.iter_texts(lang, "train"))
    heldout = list(corpora.iter_texts(lang, "heldout"))
    everything = list(corpora.iter_texts(lang, "all"))
    assert not set(train) & set(heldout)
    assert len(train) + len(heldout) == len(everything)
    assert heldout == everything[corpora.HELDOUT_EVERY - 1 :: corpora.HELDOUT_EVERY]
    assert train == list(corpora.iter_texts(lang))  # "train" is the default
    assert len(heldout) >= 4


def test_unknown_language_or_split_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown corpus language 'fr'.*ko, en, ja, zh"):
        next(corpora.iter_texts("fr"))
    with pytest.raises(ValueError, match="unknown split 'test'.*train, heldout"):
        next(corpora.iter_texts("ko", "test"))
    with pytest.raises(ValueError, match="unknown split"):
        corpora.finance_qa("validation")
    with pytest.raises(ValueError, match="no shipped corpus file 'nope'"):
        corpora.path("nope")


def test_path_resolves_shipped_files():
    assert corpora.path("ko").name == "ko.jsonl"
    assert corpora.path("finance_qa") == corpora.path("finance_qa.jsonl")
    assert corpora.path("en").is_file()


def test_finance_qa_records_follow_the_bccard_schema():
    records = corpora.finance_qa("all")
    assert len(records) >= 400
    for r in records:
        assert isinstance(r["input"], str) and r["input"].strip()
        assert isinstance(r["output"], str) and r["output"].strip()
        assert r["lang"] in ("ko", "en")
        assert unicodedata.is_normalized("NFC", r["input"] + r["output"])
    langs = {r["lang"] for r in records}
    assert langs == {"ko", "en"}
    written = [r for r in records if r["origin"] == "written"]
    assert sum(r["lang"] == "ko" for r in written) >= 30 and sum(r["lang"] == "en" for r in written) >= 30
    for r in records:
        if r["lang"] == "ko":
            assert script_share(r["input"], is_hangul) > 0.5
    assert len({r["input"] for r in records}) == len(records), "duplicate questions"


def test_finance_qa_splits_and_language_filter():
    train, heldout = corpora.finance_qa("train"), corpora.finance_qa("heldout")
    assert train == corpora.finance_qa()
    assert not {r["input"] for r in train} & {r["input"] for r in heldout}
    assert len(train) + len(heldout) == len(corpora.finance_qa("all"))
    assert len(heldout) >= 40
    ko = corpora.finance_qa("train", lang="ko")
    assert ko and all(r["lang"] == "ko" for r in ko)
    with pytest.raises(ValueError, match="'ko' and 'en'"):
        corpora.finance_qa(lang="ja")


def expected_result(c: dict) -> float:
    """Recompute each computed answer with float math, independently of the generator."""
    t = c["type"]
    if t == "simple_interest":
        return c["principal"] * c["rate_pct"] / 100 * c["years"]
    if t == "compound_interest":
        return c["principal"] * (1 + c["rate_pct"] / 100) ** c["years"]
    if t == "installment":
        unit = 1 if c["currency"] == "KRW" else 0.01
        return math.floor(c["price"] / c["months"] / unit + 1e-9) * unit
    if t == "loan_payment":
        i = c["rate_pct"] / 1200
        return c["principal"] * i / (1 - (1 + i) ** -c["months"])
    if t == "savings_plan":
        n = c["months"]
        return c["deposit"] * c["rate_pct"] / 1200 * n * (n + 1) / 2
    if t == "fee":
        return c["amount"] * c["rate_pct"] / 100
    if t == "cashback":
        return min(c["spend"] * c["rate_pct"] / 100, c["cap"])
    if t == "currency_conversion":
        return c["usd"] * c["krw_per_usd"]
    raise AssertionError(f"unknown calc type {t}")


def test_computed_answers_arithmetic_is_correct():
    computed = [r for r in corpora.finance_qa("all") if r["origin"] == "computed"]
    assert len(computed) >= 200
    kinds = set()
    for r in computed:
        c = r["calc"]
        kinds.add(c["type"])
        expected = expected_result(c)
        tolerance = 1 if c["currency"] == "KRW" else 0.01
        assert abs(c["result"] - expected) <= tolerance, (r["input"], c, expected)
        result = Decimal(repr(c["result"]))
        shown = f"{result:,.0f}" if c["currency"] == "KRW" or c["type"] == "currency_conversion" else f"{result:,.2f}"
        assert shown in r["output"], (shown, r["output"])
        if c["type"] == "installment":
            months_total = Decimal(repr(c["result"])) * (c["months"] - 1) + Decimal(repr(c["first"]))
            assert months_total == Decimal(repr(c["price"])).quantize(months_total)
    assert len(kinds) == 8


def test_files_are_one_json_object_per_line():
    for name in ["ko", "en", "ja", "zh", "finance_qa"]:
        for line in corpora.path(name).read_bytes().splitlines():
            assert isinstance(orjson.loads(line), dict)



def test_build_parses_hand_written_drafts():
    from moai_llm.corpora.build import parse_documents, parse_qa

    draft = "First para.\nSecond para.\n\n---\nAnother doc.\n---\n\n"
    assert parse_documents(draft) == ["First para.\nSecond para.", "Another doc."]
    qa = "Q: What is APR?\nA: The yearly cost\nof borrowing.\n\nQ: Unanswered?\n"
    assert parse_qa(qa) == [("What is APR?", "The yearly cost of borrowing.")]
