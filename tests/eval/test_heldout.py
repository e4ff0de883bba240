"""The held-out evaluation files are generated from the embedded corpora, reproducibly and correctly."""

from __future__ import annotations

import json

from moai_llm import corpora
from moai_llm.eval.heldout import (
    generate_rows,
    heldout_texts,
    multiple_choice_rows,
    write_eval_files,
)
from moai_llm.eval.local_tasks import final_number


def test_multiple_choice_rows_hold_the_right_answer_and_distinct_same_language_distractors():
    held = corpora.finance_qa("heldout")
    rows = multiple_choice_rows()
    assert len(rows) == len(held)
    by_answer = {r["output"]: r["lang"] for r in corpora.finance_qa("all")}
    positions = set()
    for row, source in zip(rows, held, strict=True):
        assert row["question"] == source["input"] and row["choices"][row["answer"]] == source["output"]
        assert len(set(row["choices"])) == 4
        assert {by_answer[c] for c in row["choices"]} == {source["lang"]}
        positions.add(row["answer"])
    assert positions == {0, 1, 2, 3}  # the right answer is not always in the same place
    assert multiple_choice_rows() == rows  # seeded: the same file every time


def test_generate_rows_are_the_computed_questions_with_a_final_number(tmp_path):
    rows = generate_rows()
    assert rows and all(final_number(r["answer"]) is not None for r in rows)
    paths = write_eval_files(tmp_path)
    assert [json.loads(x) for x in paths["generate"].read_text().splitlines()] == rows
    assert len(paths["multiple_choice"].read_text().splitlines()) == len(multiple_choice_rows())
    texts = [json.loads(x)["text"] for x in paths["text"].read_text().splitlines()]
    assert texts == heldout_texts() and len(texts) == sum(len(list(corpora.iter_texts(lang, "heldout")))
                                                          for lang in corpora.languages())
    train = {t for lang in corpora.languages() for t in corpora.iter_texts(lang, "train")}
    assert not train & set(texts)  # held out: nothing the quickstart trains on
