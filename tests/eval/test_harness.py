"""The lm-eval bridge: suites resolve in the installed lm-eval, unknown names get the closest
real ones, the hub datasets a task needs are found without downloading, and nothing runs
offline when they are missing; runs with different shot counts merge into one result."""

from __future__ import annotations

import json

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.eval import harness
from moai_llm.eval.harness import SUITES, TaskRequest


def test_every_suite_task_is_in_the_installed_lm_eval():
    known = set(harness.task_manager().all_tasks)
    missing = [(suite, name) for suite, tasks in SUITES.items() for name, _ in tasks if name not in known]
    assert not missing
    assert dict(SUITES["seed"]) == {"mmlu": 5, "hellaswag": 10, "arc_challenge": 25, "truthfulqa_mc2": 0, "gsm8k_cot": 8}
    assert [n for n, _ in SUITES["ko"]] == ["kmmlu", "kobest", "haerae", "click", "hrm8k"]


def test_resolve_tasks_takes_suites_names_and_a_global_shot_count():
    reqs = harness.resolve_tasks(["arc_easy,hellaswag", "kobest"], ["seed"], None)
    assert [(r.name, r.num_fewshot) for r in reqs][:2] == [("mmlu", 5), ("hellaswag", 10)]
    assert [(r.name, r.num_fewshot) for r in reqs][5:] == [("arc_easy", None), ("hellaswag", None), ("kobest", None)]
    assert {r.num_fewshot for r in harness.resolve_tasks([], ["seed"], 3)} == {3}


def test_unknown_names_are_refused_with_the_closest_ones():
    with pytest.raises(MoaiInputError, match=r"--tasks helaswag: no such lm-eval task or group; closest: hellaswag"):
        harness.resolve_tasks(["helaswag"], [], None)
    with pytest.raises(MoaiInputError, match="--suite fr: no such suite"):
        harness.resolve_tasks([], ["fr"], None)


def test_datasets_are_found_from_the_task_configs():
    assert harness.datasets_needed("arc_challenge") == ["allenai/ai2_arc"]
    assert harness.datasets_needed("mmlu") == ["cais/mmlu"]  # a group: every subtask's dataset
    assert harness.datasets_needed("kobest") == ["skt/kobest_v1"]


def test_offline_without_cached_datasets_lists_each_task_and_runs_nothing(monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not harness.hub_reachable()  # the tests run with HF_HUB_OFFLINE=1
    with pytest.raises(MoaiInputError) as err:
        harness.check_datasets([TaskRequest("arc_challenge"), TaskRequest("gsm8k_cot", 8), TaskRequest({"task": "local_x"})])
    lines = str(err.value).splitlines()
    assert lines[1:] == ["  arc_challenge: needs the hub dataset allenai/ai2_arc", "  gsm8k_cot: needs the hub dataset openai/gsm8k"]
    (tmp_path / "datasets" / "allenai___ai2_arc").mkdir(parents=True)  # cached: loads offline
    (tmp_path / "hub" / "datasets--openai--gsm8k").mkdir(parents=True)
    harness.check_datasets([TaskRequest("arc_challenge"), TaskRequest("gsm8k_cot", 8)])


def test_runs_with_different_shot_counts_merge_into_one_result(model_dir, tmp_path, capfd):
    from moai_llm.eval.local_tasks import LocalTask, build_task
    from moai_llm.inference import load_for_chat

    rows = [{"question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(6)]
    (tmp_path / "even.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    zero = build_task(LocalTask(str(tmp_path / "even.jsonl"), choices="yes,no"), tmp_path)
    two = build_task(LocalTask(str(tmp_path / "odd.jsonl"), choices="yes,no", fewshot=2), tmp_path)
    model, tokenizer, _ = load_for_chat(model_dir)
    lm = harness.make_lm(model, tokenizer, batch_size=4)
    results = harness.run_tasks(lm, [TaskRequest(zero, 0), TaskRequest(two, 2)])
    assert results["n-shot"] == {"local_even": 0, "local_odd": 2}
    rows_out = harness.result_rows(results, ["local_even", "local_odd"])
    assert [(r["task"], r["metric"], r["shots"]) for r in rows_out] == [
        ("local_even", "acc", 0), ("local_even", "acc_norm", 0), ("local_odd", "acc", 2), ("local_odd", "acc_norm", 2)]
    assert all(0 <= r["value"] <= 1 and r["stderr"] is not None for r in rows_out)
    # without a terminal (here: captured) no progress bar writes carriage returns into the log
    assert "\r" not in capfd.readouterr().err


def test_result_rows_open_a_group_without_an_aggregate():
    results = {"results": {"grp": {"alias": "grp"}, "a": {"acc,none": 0.5, "acc_stderr,none": 0.1},
                           "b": {"exact_match,strict": 0.25, "exact_match_stderr,strict": "N/A"}},
               "group_subtasks": {"grp": ["a", "b"]}, "n-shot": {"a": 5, "b": 8}}
    assert harness.result_rows(results, ["grp"]) == [
        {"task": "a", "metric": "acc", "filter": "none", "value": 0.5, "stderr": 0.1, "shots": 5},
        {"task": "b", "metric": "exact_match", "filter": "strict", "value": 0.25, "stderr": None, "shots": 8}]
