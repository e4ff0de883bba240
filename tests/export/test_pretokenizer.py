"""moai_llm/export/pretokenizer.py: which llama.cpp pre-tokenizer reproduces a tokenizer.

moai's own tokenizers (Llama-3's pattern, ignore_merges) are llama.cpp's `llama-bpe`; Qwen's are
`qwen2`; moai's earlier pattern (` ?\\p{N}{1,3}`) is reproduced by none and is refused with its
text; with the mismatch allowed, the measured share is that of documents whose ids differ.
"""

from __future__ import annotations

import copy
import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.export.pretokenizer import heldout_documents, mismatch, recognise, with_pre
from moai_llm.tokenizer.train import SPLIT_PATTERN

OLD_MOAI = (r"'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def spec_of(folder) -> dict:
    return json.loads((folder / "tokenizer.json").read_text())


def with_pattern(spec: dict, pattern: str) -> dict:
    out = copy.deepcopy(spec)
    out["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    return out


def test_new_moai_tokenizers_are_llama_bpe(moai_tok):
    spec = spec_of(moai_tok)
    assert spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == SPLIT_PATTERN
    assert recognise(spec).name == "llama-bpe"


def test_qwen_tokenizers_are_qwen2(qwen_tok):
    assert recognise(spec_of(qwen_tok)).name == "qwen2"


def test_the_earlier_moai_pattern_is_refused_naming_it(moai_tok):
    spec = with_pattern(spec_of(moai_tok), OLD_MOAI)
    with pytest.raises(MoaiInputError, match=r"moai's before 2026-12") as err:
        recognise(spec)
    assert "?\\\\p{N}{1,3}" in str(err.value) and "--allow-tokenizer-mismatch" in err.value.hint


def test_an_unknown_pattern_is_refused_with_its_text(moai_tok):
    spec = with_pattern(spec_of(moai_tok), r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+")
    with pytest.raises(MoaiInputError, match=r"no pre-tokenizer with its split pattern '\\\\p\{L\}\+"):
        recognise(spec)


def test_the_right_pattern_with_the_wrong_merge_rule_is_refused(moai_tok):
    spec = spec_of(moai_tok)
    spec["model"]["ignore_merges"] = False
    with pytest.raises(MoaiInputError, match="applies merges for words in the vocabulary"):
        recognise(spec)


def test_a_unigram_tokenizer_is_refused():
    spec = {"model": {"type": "Unigram", "vocab": []}, "pre_tokenizer": None}
    with pytest.raises(MoaiInputError, match="Unigram model"):
        recognise(spec)


@pytest.fixture(scope="module")
def old_moai_tok(tmp_path_factory):
    """A tokenizer trained the way moai trained them before 2026-12 (its vocabulary has ' 12')."""
    from export_texts import training_texts

    import moai_llm.tokenizer.train as trainmod

    saved = trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES
    trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES = OLD_MOAI, False
    try:
        return trainmod.train_tokenizer(training_texts(), tmp_path_factory.mktemp("old") / "tok", vocab_size=3000)
    finally:
        trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES = saved


def test_mismatch_counts_documents_whose_ids_differ(moai_tok, old_moai_tok):
    from tokenizers import Tokenizer

    docs = heldout_documents(60)
    pre, differ, total = mismatch(spec_of(moai_tok), docs)
    assert (pre.name, differ, total) == ("llama-bpe", 0, len(docs))
    old = spec_of(old_moai_tok)
    pre, differ, total = mismatch(old, docs)
    twin = Tokenizer.from_str(json.dumps(with_pre(old, pre)))
    own = Tokenizer.from_str(json.dumps(old))
    assert differ == sum(own.encode(d).ids != twin.encode(d).ids for d in docs)
    spaced_digits = sum(any(c == " " and n.isdigit() for c, n in zip(d, d[1:], strict=False)) for d in docs)
    assert 0 < differ <= spaced_digits  # only a space before a digit splits differently


def test_an_extended_qwen_tokenizer_keeps_its_pattern_and_still_exports_as_qwen2(qwen_tok, tmp_path):
    from moai_llm import corpora
    from moai_llm.tokenizer.extend import extend_tokenizer

    texts = [r["input"] + " " + r["output"] for r in corpora.finance_qa("train")]
    out = tmp_path / "extended"
    extend_tokenizer(qwen_tok, texts, out, vocab_size=3400)
    spec = spec_of(out)
    assert len(spec["model"]["vocab"]) > len(spec_of(qwen_tok)["model"]["vocab"])
    assert spec["pre_tokenizer"] == spec_of(qwen_tok)["pre_tokenizer"]
    assert recognise(spec).name == "qwen2"


def test_a_tokenizer_that_adds_a_leading_space_is_refused(moai_tok):
    spec = spec_of(moai_tok)
    spec["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True
    with pytest.raises(MoaiInputError, match="adds a space before the text"):
        recognise(spec)
