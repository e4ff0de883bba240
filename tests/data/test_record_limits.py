"""One record is at most MAX_RECORD_BYTES, in every format, refused with its place before it is
tokenized (a 50 MB line once took 6.8 GiB and could abort inside the Rust tokenizer)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moai_llm.data import prepare_dataset
from moai_llm.data.sources import MAX_RECORD_BYTES
from moai_llm.errors import MoaiInputError

BIG = "x" * (MAX_RECORD_BYTES + 1)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from moai_llm.tokenizer import train_tokenizer

    return train_tokenizer(["hello world"] * 20, tmp_path_factory.mktemp("tok") / "tok", vocab_size=300)


@pytest.mark.parametrize("mode, columns, says", [
    ("pretrain", {"text": ["fine", BIG]}, "big.parquet:row 1: one record is longer than 8 MiB"),
    ("sft", {"question": ["q?", "q2?"], "answer": ["a", BIG]}, "big.parquet:row 1: one record is longer than 8 MiB"),
])
def test_a_later_record_over_the_limit_is_named(tok, tmp_path, mode, columns, says):
    pq.write_table(pa.table(columns), tmp_path / "big.parquet")
    with pytest.raises(MoaiInputError, match=says):
        prepare_dataset([str(tmp_path / "big.parquet")], tok, 64, tmp_path / "out", mode=mode)
    assert not (tmp_path / "out").exists()


def test_a_jsonl_line_over_the_limit_is_refused_without_reading_it_whole(tok, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": "' + BIG + '"}\n')
    with pytest.raises(MoaiInputError, match=r"d.jsonl:2: one record is longer than 8 MiB"):
        prepare_dataset([str(tmp_path / "d.jsonl")], tok, 64, tmp_path / "out")
