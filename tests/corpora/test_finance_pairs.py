"""The shipped finance preference pairs: exactly what the generator makes from the shipped Q&A,
one pair per question on the same line (so the held-out split holds out the same questions),
chosen = the reference answer, rejected = a wrong one (another question's answer, or the worked
answer with a wrong result), and readable by `moai data prepare --mode preference`."""

from __future__ import annotations

import re

from moai_llm import corpora
from moai_llm.corpora.preference_set import preference_pairs


def test_the_shipped_file_is_what_the_generator_makes():
    assert list(corpora.iter_records("finance_pairs")) == preference_pairs(list(corpora.iter_records("finance_qa")))


def test_one_pair_per_question_and_the_same_split():
    for split in ("train", "heldout"):
        qa, pairs = corpora.finance_qa(split), corpora.finance_pairs(split)
        assert [p["prompt"] for p in pairs] == [r["input"] for r in qa]
        assert [p["chosen"] for p in pairs] == [r["output"] for r in qa]
    assert len(corpora.finance_pairs("heldout")) >= 50
    assert {p["lang"] for p in corpora.finance_pairs("heldout", lang="en")} == {"en"}


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*(?:\.\d+)?", text)


def test_rejected_answers_are_wrong_in_the_intended_way():
    qa = corpora.finance_qa("all")
    answers = {r["output"] for r in qa}
    kinds = {"perturbed": 0, "other_answer": 0}
    for pair, record in zip(corpora.finance_pairs("all"), qa, strict=True):
        assert pair["rejected"] != pair["chosen"] and pair["rejected"].strip()
        kinds[pair["rejected_from"]] += 1
        if pair["rejected_from"] == "perturbed":  # the working kept, the result changed
            result = record["calc"]["result"]
            assert pair["rejected"] not in answers
            assert _numbers(pair["chosen"]) != _numbers(pair["rejected"]) and result is not None
            assert len(_numbers(pair["chosen"])) == len(_numbers(pair["rejected"]))
        else:  # another question's answer in the same language
            other = [r for r in qa if r["output"] == pair["rejected"]]
            assert other and other[0]["lang"] == pair["lang"] and other[0]["input"] != pair["prompt"]
    assert kinds["perturbed"] >= 200 and kinds["other_answer"] >= 200


def test_prepared_as_preference_data(tokenizer_dir, tmp_path):
    from moai_llm.data.prepare import prepare_dataset

    manifest = prepare_dataset([str(corpora.path("finance_pairs"))], tokenizer_dir, 512, tmp_path / "pairs", "preference")
    assert manifest["preference"]["num_pairs"] + manifest["preference"]["pairs_dropped"] == len(corpora.finance_pairs("all"))


def test_no_answer_crosses_the_split():
    """A held-out pair's answers are both unseen in training, and no train pair shows a held-out
    answer: otherwise held-out accuracy measures memorisation, not preference."""
    held_answers = {r["output"] for r in corpora.finance_qa("heldout")}
    train_answers = {r["output"] for r in corpora.finance_qa("train")}
    for pair in corpora.finance_pairs("heldout"):
        assert pair["rejected"] not in train_answers and pair["chosen"] not in train_answers
    for pair in corpora.finance_pairs("train"):
        assert pair["rejected"] not in held_answers
    held_other = [p for p in corpora.finance_pairs("heldout") if p["rejected_from"] == "other_answer"]
    assert len(held_other) >= 20 and all(p["rejected"] in held_answers for p in held_other)
