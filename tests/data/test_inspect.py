"""inspect: counts, shares, histogram and decoded rows with the loss-carrying spans marked."""

from __future__ import annotations

import pytest

from moai_llm.data import prepare_dataset
from moai_llm.data.inspect import decoded_rows, histogram_lines, summary
from moai_llm.errors import MoaiInputError


def test_summary_and_decoded_sft_rows(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"Hi {i}", "answer": f"Hello {i}"} for i in range(5)])
    prepare_dataset([str(path)], tokenizer_dir, 256, tmp_path / "out", mode="sft")
    info = summary(tmp_path / "out")
    assert info["num_documents"] == 5 and info["num_rows"] == 1 and info["mode"] == "sft"
    assert info["sources"][0]["token_share"] == 1.0
    assert sum(info["doc_length_histogram"].values()) == 5
    (row,) = decoded_rows(tmp_path / "out", 3)
    assert sorted(s["text"] for s in row if s["loss"]) == [f"Hello {i}<|im_end|>" for i in range(5)]
    assert row[-1] == {"doc": -1, "loss": False, "text": row[-1]["text"]} and row[-1]["text"].startswith("<pad ×")
    first = row[0]["doc"]
    text = "".join(s["text"] for s in row if s["doc"] == first)
    n = text.split("Hi ")[1][0]
    assert text == f"<|im_start|>user\nHi {n}<|im_end|>\n<|im_start|>assistant\nHello {n}<|im_end|>\n"


def test_histogram_lines_scale_to_the_largest_bucket():
    lines = histogram_lines({"16": 10, "32": 5, "64": 0}, width=10)
    assert lines[0].split()[1] == "█" * 10 and lines[1].split()[1] == "█" * 5
    assert lines[0].startswith("      1-16") and lines[-1].rstrip().endswith(" 0")


def test_a_folder_that_is_not_prepared_is_an_input_error(tmp_path):
    with pytest.raises(MoaiInputError, match="not a prepared dataset"):
        summary(tmp_path)
