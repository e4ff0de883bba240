"""Held-out text as rows: every token scored exactly once, predicted from the separator
pretraining puts before each document, windows within a row, bytes counted on the raw text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.eval.text import pack_texts, read_texts, windows


@pytest.mark.parametrize("n,seq_len,stride", [(1, 8, 7), (7, 8, 7), (8, 8, 7), (40, 8, 7), (40, 8, 3), (41, 16, 1), (100, 9, 5)])
def test_windows_score_each_token_once_within_a_row(n, seq_len, stride):
    covered = []
    for start, end, scored in windows(n, seq_len, stride):
        assert end - start <= seq_len  # one window fits one row
        assert start < scored < end  # at least one token of context, at least one scored
        assert end - scored <= max(stride, seq_len - 1)
        covered.extend(range(scored, end))
    assert covered == list(range(1, n + 1))  # token i of [sep] + tokens, each exactly once


def test_first_window_starts_at_the_separator_and_later_ones_take_all_context_that_fits():
    ws = list(windows(30, seq_len=10, stride=4))
    assert ws[0] == (0, 10, 1)
    assert all(end - start == 10 for start, end, _ in ws[1:])  # full rows of context after the first


def _doc_tokens(tokenizer_dir, text):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("seq_len,stride", [(256, None), (16, None), (16, 5)])
def test_packed_rows_hold_every_document_token_once_after_the_separator(docs, tokenizer_dir, seq_len, stride):
    text = pack_texts(docs, tokenizer_dir, seq_len=seq_len, stride=stride)
    doc_ids = [_doc_tokens(tokenizer_dir, d) for d in docs]
    assert text.documents == len(docs)
    assert text.bytes == sum(len(d.encode("utf-8")) for d in docs)
    assert text.tokens == sum(map(len, doc_ids)) == int((text.labels != -100).sum())
    assert text.input_ids.shape == text.labels.shape == text.position_ids.shape == (len(text), seq_len)
    # Split each row into segments by position_ids; collect scored tokens per segment.
    scored_multiset: list[int] = []
    starts_with_sep = 0
    for ids, labels, pos in zip(text.input_ids, text.labels, text.position_ids, strict=True):
        bounds = [*np.flatnonzero(pos == 0).tolist(), seq_len]
        for a, b in zip(bounds, bounds[1:], strict=False):
            assert (pos[a:b] == np.arange(b - a)).all()
            assert labels[a] == -100  # a segment's first token is context, never a target
            seg_scored = labels[a:b][labels[a:b] != -100]
            assert (seg_scored == ids[a:b][labels[a:b] != -100]).all()
            scored_multiset.extend(seg_scored.tolist())
            starts_with_sep += int(ids[a] == text.separator_id and len(seg_scored) > 0)
    assert sorted(scored_multiset) == sorted(t for d in doc_ids for t in d)
    assert starts_with_sep >= len(docs)  # every document's first window opens with the separator
    assert text.separator_id == 0  # moai tokenizers: <|endoftext|>, what `data prepare` appends


def test_long_document_with_a_small_stride_makes_more_windows_not_more_tokens(docs, tokenizer_dir):
    wide = pack_texts(docs, tokenizer_dir, seq_len=16)
    narrow = pack_texts(docs, tokenizer_dir, seq_len=16, stride=4)
    assert narrow.tokens == wide.tokens and narrow.bytes == wide.bytes
    assert narrow.windows > wide.windows


def test_bad_settings_and_empty_text_are_refused(docs, tokenizer_dir):
    with pytest.raises(MoaiInputError, match="--stride 16"):
        pack_texts(docs, tokenizer_dir, seq_len=16, stride=16)
    with pytest.raises(MoaiInputError, match="empty"):
        pack_texts(["", ""], tokenizer_dir, seq_len=16)


def test_read_texts_takes_what_data_prepare_takes(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in ["one", "  ", "two"]))
    (tmp_path / "b.txt").write_text("line one\n\nline two\n")
    (tmp_path / "c.csv").write_text("id,body\n1,first\n2,second\n")
    assert read_texts(str(tmp_path / "a.jsonl")) == ["one", "two"]  # column detected, blanks skipped
    assert read_texts(str(tmp_path / "b.txt")) == ["line one", "line two"]
    assert read_texts(str(tmp_path / "c.csv"), text_column="body") == ["first", "second"]
    assert read_texts([str(tmp_path / "*.jsonl"), str(tmp_path / "b.txt")], max_documents=3) == ["one", "two", "line one"]


def test_read_texts_errors_name_the_source_and_the_columns(tmp_path):
    (tmp_path / "blank.jsonl").write_text('{"text": " "}\n{"text": ""}\n')
    with pytest.raises(MoaiInputError, match="blank.jsonl: no text to score"):
        read_texts(str(tmp_path / "blank.jsonl"))
    (tmp_path / "cols.jsonl").write_text('{"title": "a", "body": "b"}\n')
    with pytest.raises(MoaiInputError, match="columns found: title, body"):
        read_texts(str(tmp_path / "cols.jsonl"), text_column="text")
    with pytest.raises(MoaiInputError, match="missing.jsonl"):
        read_texts(str(tmp_path / "missing.jsonl"))
    with pytest.raises(MoaiInputError, match="no-such-org/no-such-set: no such file or folder, and as a hub dataset"):
        read_texts("no-such-org/no-such-set")  # the tests run with the hub offline


def test_an_unreachable_hub_name_hints_at_evals_own_flag():
    """Offline, `moai eval DIR --text wikitext` must not advise `--input` (data prepare's flag)."""
    with pytest.raises(MoaiInputError) as caught:
        read_texts("wikitext")  # the tests run with the hub offline
    assert "--input" not in (caught.value.hint or "") and "--text" in caught.value.hint
