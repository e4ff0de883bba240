"""The README's whole path trains on `python -m moai_llm.corpora.split` and evaluates on
`python -m moai_llm.eval.heldout`: the two never share a document or a question, and together
they are the whole shipped corpora (the split is the corpora's own, as in `moai quickstart`)."""

from __future__ import annotations

import json
import subprocess
import sys

from moai_llm import corpora
from moai_llm.eval.heldout import write_eval_files


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_train_files_hold_no_held_out_text_or_question(tmp_path):
    out = subprocess.run([sys.executable, "-m", "moai_llm.corpora.split", str(tmp_path / "train")],
                         capture_output=True, text=True, check=True).stdout
    assert "finance_qa:" in out
    evals = write_eval_files(tmp_path / "eval")
    train_texts = {r["text"] for lang in corpora.languages() for r in _lines(tmp_path / "train" / f"{lang}.jsonl")}
    held_texts = {r["text"] for r in _lines(evals["text"])}
    assert len(held_texts) == 73 and not train_texts & held_texts
    train_questions = {r["input"] for r in _lines(tmp_path / "train" / "finance_qa.jsonl")}
    held_questions = {r["question"] for r in _lines(evals["multiple_choice"])}
    assert len(held_questions) == 56 and not train_questions & held_questions
    everything = {r["text"] for lang in corpora.languages() for r in corpora.iter_records(lang, "all")}
    assert train_texts | held_texts == everything
    assert len(train_questions) + len(held_questions) == len(corpora.finance_qa("all"))
    train_prompts = {r["prompt"] for r in _lines(tmp_path / "train" / "finance_pairs.jsonl")}
    held_prompts = {r["prompt"] for r in _lines(evals["pairs"])}
    assert len(train_prompts) == 508 and len(held_prompts) == 56 and not train_prompts & held_prompts
