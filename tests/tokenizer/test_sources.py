"""Specification of tokenizer text sources: every local format, folders and globs, streaming
reads, one-line errors, hub datasets failing clearly offline, languages falling back to moai's
embedded corpora."""

from __future__ import annotations

import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer.text_streams import (
    BLOCK_CHARS,
    hub_reachable,
    hub_source,
    iter_sources,
    multilingual_sources,
    resolve_inputs,
)


def test_reads_every_local_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("line one\n    indented two\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "json line"}) + "\n")
    (tmp_path / "c.json").write_text(json.dumps([{"content": "json list"}]))
    (tmp_path / "d.csv").write_text("id,text\n1,csv row\n")
    pq.write_table(pa.table({"text": ["parquet row"]}), tmp_path / "e.parquet")
    texts = list(iter_sources(resolve_inputs([str(tmp_path)])))
    # plain text keeps its line breaks and indentation (the tokenizer must learn them)
    assert texts == ["line one\n    indented two\n", "json line", "json list", "csv row", "parquet row"]


def test_text_column_and_globs(tmp_path):
    (tmp_path / "qa1.jsonl").write_text(json.dumps({"q": "질문", "a": "답변"}) + "\n")
    (tmp_path / "qa2.jsonl").write_text(json.dumps({"q": "second", "a": "answer"}) + "\n")
    sources = resolve_inputs([str(tmp_path / "qa*.jsonl")], text_column="a")
    assert [s.size for s in sources] == [(tmp_path / f"qa{i}.jsonl").stat().st_size for i in (1, 2)]
    assert list(iter_sources(sources)) == ["답변", "answer"]


def test_missing_text_column_is_one_clear_error(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"q": "a"}) + "\n")
    with pytest.raises(MoaiInputError, match="x.jsonl:1.*no column 'text'"):
        list(iter_sources(resolve_inputs([str(tmp_path / "x.jsonl")], text_column="text")))


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing.txt", "no such file"),
    (lambda p: (p / "empty.txt").write_text("") and None or p / "empty.txt", "empty"),
    (lambda p: (p / "sub").mkdir() or (p / "sub" / "x.bin").write_bytes(b"\0") and None or p / "sub", "no .*files"),
    (lambda p: p / "*.nothing", "matches no file"),
])
def test_bad_paths_are_refused_before_reading(tmp_path, make, match):
    with pytest.raises(MoaiInputError, match=match):
        resolve_inputs([str(make(tmp_path))])


def test_plain_text_streams_in_bounded_blocks(tmp_path):
    path = tmp_path / "big.txt"
    line = "가나다라마바사 abcdefg 0123456789\n"
    path.write_text(line * 200_000)  # ~7 MB
    blocks = resolve_inputs([str(path)])[0].open()
    first = next(blocks)
    assert len(first) <= BLOCK_CHARS + len(line)
    sizes = [len(first)] + [len(b) for b in blocks]
    assert max(sizes) <= BLOCK_CHARS + len(line)
    assert sum(sizes) == len(line) * 200_000


def test_not_utf8_text_is_a_clear_error(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(MoaiInputError, match="not UTF-8"):
        list(iter_sources(resolve_inputs([str(tmp_path / "latin.txt")])))


def test_hub_is_unreachable_in_tests_and_unknown_dataset_fails_in_one_line():
    assert hub_reachable() is False  # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(MoaiInputError) as exc:
        hub_source("moai-test/no-such-dataset-xyz", None)
    assert "--dataset moai-test/no-such-dataset-xyz" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_local_dataset_folder_loads_through_datasets(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    source = hub_source(str(tmp_path), None, max_samples=3)
    assert list(source.open()) == ["doc 0", "doc 1", "doc 2"]


def test_multilingual_offline_uses_embedded_corpora(capsys):
    from moai_llm.progress import console

    with console.capture() as cap:
        sources = multilingual_sources(["ko", "en"], max_samples_per_lang=5)
    assert "embedded ko corpus" in cap.get() and "not reachable" in cap.get()
    texts = [list(s.open()) for s in sources]
    assert [len(t) for t in texts] == [5, 5]
    assert any("\uac00" <= ch <= "\ud7a3" for ch in texts[0][0])


def test_unknown_language_is_refused():
    with pytest.raises(MoaiInputError, match="unknown language"):
        multilingual_sources(["xx"])
