"""Sources: every file type, folders and globs, text columns, bad rows, fingerprints."""

from __future__ import annotations

import csv
import os
import re

import pytest

from moai_llm.data.sources import (
    BadRows,
    fingerprint,
    iter_records,
    resolve_sources,
    same_content,
    text_column,
)
from moai_llm.errors import MoaiInputError


def records(spec, skip=False):
    (src,) = resolve_sources([str(spec)])
    bad = BadRows(skip)
    return [r for r, _ in iter_records(src, bad)], bad


def test_every_file_type_reads_the_same_records(tmp_path, write_jsonl):
    rows = [{"text": "가나다"}, {"text": "hello"}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.json").write_text('[{"text": "가나다"}, {"text": "hello"}]')
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["text"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "d.txt").write_text("가나다\n\nhello\n")
    import datasets

    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "e.parquet"))
    ds.save_to_disk(str(tmp_path / "arrow"))
    arrow = next((tmp_path / "arrow").glob("*.arrow"))
    for spec in ("a.jsonl", "b.json", "c.csv", "d.txt", "e.parquet", arrow):
        got, _ = records(tmp_path / spec)
        assert [r["text"] for r in got] == ["가나다", "hello"], spec


def test_folders_and_globs_expand_sorted(tmp_path, write_jsonl):
    (tmp_path / "x").mkdir()
    write_jsonl(tmp_path / "x" / "2.jsonl", [{"text": "b"}])
    write_jsonl(tmp_path / "x" / "1.jsonl", [{"text": "a"}])
    (tmp_path / "x" / "empty.jsonl").write_text("")
    assert [p.name for p in resolve_sources([str(tmp_path / "x")])[0].files] == ["1.jsonl", "2.jsonl"]
    assert len(resolve_sources([str(tmp_path / "x" / "*.jsonl")], weights=[2])[0].files) == 2


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"text": "fine"}\n')
    with pytest.raises(MoaiInputError, match=r"bad\.jsonl:2: malformed JSON") as err:
        records(path)
    assert "--skip-bad-rows" in err.value.hint
    got, bad = records(path, skip=True)
    assert [r["text"] for r in got] == ["ok", "fine"] and bad.count == 1


def test_non_utf8_bytes_are_reported_with_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(MoaiInputError, match=r"latin\.jsonl:2: .*not UTF-8"):
        records(path)


def test_empty_and_missing_files_are_input_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(MoaiInputError, match="empty"):
        resolve_sources([str(tmp_path / "empty.jsonl")])
    with pytest.raises(MoaiInputError, match="no such file"):
        resolve_sources([str(tmp_path / "nope.jsonl")])
    with pytest.raises(MoaiInputError, match="matches no file"):
        resolve_sources([str(tmp_path / "*.parquet")])


def test_weights_must_match_the_sources(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    with pytest.raises(MoaiInputError, match="--weights has 2 values for 1 sources"):
        resolve_sources([str(tmp_path / "a.jsonl")], weights=[1, 2])


def test_text_column_is_detected_or_given():
    assert text_column({"id": 1, "content": "x"}, "f:1", None) == "content"
    assert text_column({"body": "x", "title": "t"}, "f:1", "title") == "title"
    with pytest.raises(MoaiInputError, match="columns found: id, review") as err:
        text_column({"id": 1, "review": "x"}, "f:1", None)
    assert "--text-column" in err.value.hint


def test_fingerprint_sees_content_changes_even_with_same_size_and_mtime(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello world\n")
    (src,) = resolve_sources([str(path)])
    stored = fingerprint(src, full=True)
    assert same_content(stored, src)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content
    assert same_content(stored, src)
    path.write_text("hello WORLD\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, new content
    assert not same_content(stored, src)


def test_a_byte_order_mark_is_dropped_in_every_text_format(tmp_path):
    bom = "\ufeff".encode()
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"text": "first"}\n{"text": "second"}\n')
    (tmp_path / "b.json").write_bytes(bom + b'[{"text": "first"}]')
    (tmp_path / "c.csv").write_bytes(bom + b"text,id\nfirst,1\n")
    (tmp_path / "d.txt").write_bytes(bom + b"first\nsecond\n")
    for name in ("a.jsonl", "b.json", "c.csv", "d.txt"):
        rows, _ = records(tmp_path / name)
        assert rows[0]["text"] == "first", name


@pytest.mark.parametrize(("head", "what"), [(b"\x1f\x8b\x08", "gzip-compressed"), (b"(\xb5/\xfd", "zstd-compressed"),
                                            (b"PK\x03\x04", "a zip archive"), (b"\xff\xfe{\x00", "UTF-16 text")])
def test_compressed_or_utf16_files_are_named_for_what_they_are(tmp_path, head, what):
    (tmp_path / "d.jsonl").write_bytes(head + b"\x00" * 20)
    with pytest.raises(MoaiInputError, match=f"d.jsonl: the file is {what}, not .jsonl text"):
        resolve_sources([str(tmp_path / "d.jsonl")])


def test_a_damaged_parquet_file_is_named_with_the_rows_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(100)]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(MoaiInputError, match="d.parquet: not a readable Parquet file"):
        records(path)


@pytest.mark.parametrize(("value", "why"), [(None, "is null, not text"), (3.5, "holds a number (float), not text"),
                                           (["a"], "holds a list (list), not text")])
def test_a_text_column_without_text_says_what_it_holds(value, why):
    with pytest.raises(MoaiInputError, match=f"f.jsonl:1: column 'text' {re.escape(why)}"):
        text_column({"text": value, "id": 1}, "f.jsonl:1", None)


@pytest.mark.parametrize("weight", [float("inf"), float("nan"), -1.0, 0.0])
def test_weights_must_be_positive_and_finite(tmp_path, write_jsonl, weight):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(MoaiInputError, match="a weight must be a positive, finite number"):
        resolve_sources([str(tmp_path / "a.jsonl")], weights=[weight])
