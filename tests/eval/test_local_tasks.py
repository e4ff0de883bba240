"""Local task files run as lm-eval tasks: the same scores as the same task written by hand as an
lm-eval YAML; JSONL, JSON, CSV with and without a header; answers as text, index or letter;
generate scored by exact match after normalisation; columns that are not there are named."""

from __future__ import annotations

import csv
import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.eval.local_tasks import (
    LocalTask,
    answer_index,
    build_task,
    final_number,
    normalise_answer,
)

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "Rome", "Berlin", "Madrid"], 0),
    ("Which number is even?", ["3", "7", "8", "9"], 2),
    ("금리가 오르면 예금 이자는?", ["내려간다", "올라간다", "그대로다", "사라진다"], 1),
    ("Which is a fruit?", ["carrot", "potato", "onion", "apple"], 3),
    ("2 + 2 = ?", ["3", "4", "5", "22"], 1),
    ("The sky on a clear day is", ["green", "blue", "red", "black"], 1),
    ("こんにちは means", ["goodbye", "thanks", "hello", "sorry"], 2),
    ("A credit card bill is paid", ["never", "monthly", "hourly", "yearly"], 1),
]


@pytest.fixture(scope="module")
def lm(model_dir):
    from moai_llm.eval.harness import make_lm
    from moai_llm.inference import load_for_chat

    model, tokenizer, _ = load_for_chat(model_dir)
    return make_lm(model, tokenizer, batch_size=4)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def mc_jsonl(tmp_path):
    return _write_jsonl(tmp_path / "mc.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])


def _records(config):
    with open(config["dataset_kwargs"]["data_files"]["test"], encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _per_doc_loglikelihoods(lm, tasks, **kwargs):
    import lm_eval

    from moai_llm.eval.harness import task_manager

    out = lm_eval.simple_evaluate(lm, tasks=tasks, task_manager=task_manager(include_defaults=False),
                                  log_samples=True, **kwargs)
    name = next(iter(out["samples"]))
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return out["results"][name], [[r[0][0] for r in s["resps"]] for s in samples]


def test_local_multiple_choice_scores_as_the_same_task_written_by_hand(lm, mc_jsonl, tmp_path):
    (tmp_path / "work").mkdir()
    config = build_task(LocalTask(str(mc_jsonl), "multiple-choice", choices_column="choices"), tmp_path / "work")
    by_hand = {  # what someone would write as an lm-eval YAML for this file
        "task": "by_hand_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(mc_jsonl)}},
        "test_split": "test", "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }
    ours, ours_ll = _per_doc_loglikelihoods(lm, [config])
    theirs, theirs_ll = _per_doc_loglikelihoods(lm, [by_hand])
    assert ours_ll == theirs_ll  # the same requests, token for token
    assert ours["acc,none"] == theirs["acc,none"] and ours["acc_norm,none"] == theirs["acc_norm,none"]


def test_file_formats_and_answer_forms_give_the_same_task(lm, mc_jsonl, tmp_path):
    letters = "ABCD"
    rows = [{"q": q, "A": c[0], "B": c[1], "C": c[2], "D": c[3], "gold": letters[a]} for q, c, a in QUESTIONS]
    with open(tmp_path / "header.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "plain.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([[q, *c, c[a]] for q, c, a in QUESTIONS])  # no header, answer as text
    (tmp_path / "array.json").write_text(json.dumps([{"question": q, "choices": c, "answer": str(a)} for q, c, a in QUESTIONS]))
    variants = {
        "jsonl": LocalTask(str(mc_jsonl), choices_column="choices"),
        "csv": LocalTask(str(tmp_path / "header.csv"), question_column="q", choices_column="A,B,C,D", answer_column="gold"),
        "csv-no-header": LocalTask(str(tmp_path / "plain.csv"), question_column="0", choices_column="1,2,3,4", answer_column="5"),
        "json": LocalTask(str(tmp_path / "array.json"), choices_column="choices"),
    }
    lls = {}
    for name, task in variants.items():
        work = tmp_path / f"w-{name}"
        work.mkdir()
        config = build_task(task, work)
        config["task"] = f"local_{name.replace('-', '_')}"
        lls[name] = _per_doc_loglikelihoods(lm, [config])[1]
        records = _records(config)
        assert [r["answer"] for r in records] == [a for _, _, a in QUESTIONS]
    assert lls["csv"] == lls["jsonl"] == lls["csv-no-header"] == lls["json"]


def _task(tmp_path, rows, **kw):
    f = _write_jsonl(tmp_path / "t.jsonl", rows)
    return LocalTask(str(f), **kw)


def test_fixed_label_set_fewshot_file_and_prompt_template(lm, tmp_path):
    rows = [{"review": t, "label": y} for t, y in [("great film", "yes"), ("awful", "no"), ("loved it", "yes"), ("boring", "no")]]
    shots = _write_jsonl(tmp_path / "shots.jsonl", [{"review": "superb", "label": "yes"}, {"review": "dull", "label": "no"}])
    task = _task(tmp_path, rows, question_column="review", answer_column="label", choices="yes,no",
                 prompt_template="Review: {review}\nPositive?", fewshot_file=str(shots), fewshot=2)
    (tmp_path / "w").mkdir()
    config = build_task(task, tmp_path / "w")
    assert config["num_fewshot"] == 2 and config["fewshot_split"] == "train"
    first = _records(config)[0]
    assert first == {"prompt": "Review: great film\nPositive?", "choices": ["yes", "no"], "answer": 0}
    results, lls = _per_doc_loglikelihoods(lm, [config])
    assert results["acc,none"] in (0.0, 0.25, 0.5, 0.75, 1.0) and len(lls) == 4 and all(len(x) == 2 for x in lls)


def test_generate_scores_exact_match_on_what_the_model_says(lm, tmp_path):
    """Pass 1 records the model's greedy answers; pass 2 uses them as references for half the
    questions and a wrong answer for the rest: exact match must be exactly one half."""
    questions = [f"Say something about item {i}." for i in range(8)]
    task = _task(tmp_path, [{"question": q, "answer": "unused"} for q in questions], kind="generate", max_new_tokens=6)
    (tmp_path / "w1").mkdir()
    import lm_eval

    from moai_llm.eval.harness import task_manager

    out = lm_eval.simple_evaluate(lm, tasks=[build_task(task, tmp_path / "w1")], log_samples=True,
                                  task_manager=task_manager(include_defaults=False))
    said = [s["resps"][0][0] for s in sorted(out["samples"]["local_t"], key=lambda s: s["doc_id"])]
    rows = [{"question": q, "answer": (s.upper() + " !") if i % 2 == 0 else "zzz wrong"}  # case, punctuation ignored
            for i, (q, s) in enumerate(zip(questions, said, strict=True))]
    f = _write_jsonl(tmp_path / "t.jsonl", rows)
    (tmp_path / "w2").mkdir()
    config = build_task(LocalTask(str(f), kind="generate", max_new_tokens=6), tmp_path / "w2")
    result = lm_eval.simple_evaluate(lm, tasks=[config], task_manager=task_manager(include_defaults=False))["results"]["local_t"]
    expected = sum(1 for i, s in enumerate(said) if i % 2 == 0 and normalise_answer(s, False) != "zzz wrong") / 8
    assert result["exact_match,normalised"] == pytest.approx(expected)
    assert expected >= 0.25


@pytest.mark.parametrize("text,number", [
    ("The answer is 42.", "42"), ("#### 1,234", "1234"), ("costs 3.50 dollars", "3.5"), ("72.0", "72"),
    ("He had 5 apples, ate 2, so 3 remain.\n#### 3", "3"), ("-7 degrees", "-7"), ("no digits", None), ("0.00", "0"),
])
def test_final_number(text, number):
    assert final_number(text) == number


def test_normalise_answer_compares_numbers_and_text_as_people_would():
    assert normalise_answer("So she has 1,200 won left.", True) == normalise_answer("#### 1200", True) == "1200"
    assert normalise_answer("  PARIS. ", False) == normalise_answer("paris", False) == "paris"
    assert normalise_answer("New   York!", False) == "new york"


def test_answer_forms():
    choices = ["yes", "no", "maybe"]
    assert [answer_index(a, choices, "f:1") for a in ("no", "2", 0, "C", "b")] == [1, 2, 0, 2, 1]
    with pytest.raises(MoaiInputError, match="f:1: answer 'perhaps' is not one of the choices"):
        answer_index("perhaps", choices, "f:1")


def test_missing_columns_are_named_with_the_columns_found(tmp_path):
    task = _task(tmp_path, [{"prompt": "q?", "options": ["a", "b"], "gold": 0}], choices_column="options")
    with pytest.raises(MoaiInputError, match=r"no column 'question' \(--question-column\); columns found: prompt, options, gold"):
        build_task(task, tmp_path)
    with pytest.raises(MoaiInputError, match="--choices-column"):
        build_task(_task(tmp_path, [{"question": "q", "answer": 0}]), tmp_path)
    bad_template = _task(tmp_path, [{"question": "q", "answer": "a"}], kind="generate", prompt_template="{nope}")
    with pytest.raises(MoaiInputError, match="placeholder 'nope' is not a column; columns found: question, answer"):
        build_task(bad_template, tmp_path)
    with pytest.raises(MoaiInputError, match="--kind sort"):
        build_task(_task(tmp_path, [{"question": "q", "answer": "a"}], kind="sort"), tmp_path)


def test_generate_stops_at_max_new_tokens_even_when_the_model_folder_says_512(model_dir, tmp_path):
    """moai's model folders carry chat's max_new_tokens=512 in generation_config.json; `moai eval
    --kind generate --max-new-tokens N` must still stop each answer at N tokens."""
    import warnings

    import lm_eval
    from transformers import GenerationConfig

    from moai_llm.eval.harness import make_lm, task_manager
    from moai_llm.inference import load_for_chat

    model, tokenizer, _ = load_for_chat(model_dir)
    model.generation_config = GenerationConfig(max_new_tokens=512, do_sample=False)
    rows = [{"question": f"Count to {i}.", "answer": str(i)} for i in range(3)]
    config = build_task(LocalTask(str(_write_jsonl(tmp_path / "g.jsonl", rows)), kind="generate", max_new_tokens=3),
                        tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = lm_eval.simple_evaluate(make_lm(model, tokenizer, batch_size=3), tasks=[config], log_samples=True,
                                      task_manager=task_manager(include_defaults=False))
    answers = [s["resps"][0][0] for s in out["samples"]["local_g"]]
    longest = max(len(tokenizer.decode([i]).encode()) for i in range(len(tokenizer)))
    assert all(len(a.encode()) <= 3 * longest for a in answers), answers  # 3 tokens, not 512
    assert not [w for w in caught if "max_new_tokens" in str(w.message)]
