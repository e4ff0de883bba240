"""`moai eval`: a table with a column per model, every checkpoint of a run with its curve, result
JSONs beside the run, local task files scored as lm-eval scores a hand-written YAML, and bad
input refused in one line with exit 2 and nothing written."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from moai_cli.app import app

from random_models import write_random_model, write_tokenizer

runner = CliRunner()
QUESTIONS = [("What is the capital of France?", ["Paris", "Rome", "Berlin"], 0),
             ("Which number is even?", ["3", "8", "9"], 1), ("Which is a fruit?", ["carrot", "onion", "apple"], 2),
             ("2 + 2 = ?", ["4", "5", "22"], 0), ("The sky is", ["green", "blue", "red"], 1)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("eval_tok"), vocab_size=300)


def _model(path, tok, seed):
    return write_random_model(path, tok, hidden_size=32, num_layers=1, context_length=128, seed=seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("eval_run") / "pretrain"
    for i, step in enumerate((10, 20)):
        _model(root / "checkpoints" / f"step-{step}", tok, seed=i)
    _model(root / "final_model", tok, seed=5)
    (root / "run.yaml").write_text(yaml.safe_dump({"moai_run": 2, "mode": "pretrain", "given": {"flags": {"seq_len": 64}}}))
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 4.0}) + "\n" for s in (10, 20, 30)))
    return root


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    from moai_llm import corpora

    path = tmp_path_factory.mktemp("eval_text") / "held.jsonl"
    texts = list(corpora.iter_texts("en", "heldout"))[:6]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return path, sum(len(t.encode()) for t in texts)


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_mc") / "mc.jsonl"
    path.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    return path


def _json(args):
    result = runner.invoke(app, ["eval", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_all_checkpoints_with_text_gives_a_column_per_step_a_json_each_and_the_curve(run, held):
    held, n_bytes = held
    out = _json([run, "--all-checkpoints", "--text", held])
    assert out["table"]["columns"] == ["metric", "step-10", "step-20", "final_model"]
    assert out["table"]["rows"][0][0] == "bits per byte"
    evals = out["evaluations"]
    assert [e["model"]["step"] for e in evals] == [10, 20, 30]
    assert len({e["text"]["bits_per_byte"] for e in evals}) == 3  # three different models
    assert {e["text"]["bytes"] for e in evals} == {n_bytes}
    assert all(e["settings"]["seq_len"] == 64 and e["text"]["seq_len_from"] == "the run's seq_len" for e in evals)
    assert (run / "eval" / "bpb.png").read_bytes()[:4] == b"\x89PNG"
    written = sorted((run / "eval").glob("*.json"))
    assert sorted(out["written"]) == [str(p) for p in written]
    record = json.loads(written[0].read_text())
    assert set(record["versions"]) >= {"moai", "torch", "transformers", "lm_eval"}
    assert record["model"]["run_dir"] == str(run) and record["settings"]["text"] == [str(held)]


def test_local_multiple_choice_matches_the_same_task_as_a_hand_written_lm_eval_yaml(run, tok, tmp_path, mc_file):
    """Several models in one table; the local task's scores equal lm-eval's on a hand YAML."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from moai_llm.eval.harness import make_lm
    from moai_llm.inference import load_for_chat

    other = _model(tmp_path / "other", tok, seed=7)
    out = _json([run, other, "--task-file", mc_file, "--choices-column", "choices", "--no-chat-template", "-o", tmp_path / "res"])
    assert out["table"]["columns"] == ["metric", str(run), str(other)]
    assert [r[0] for r in out["table"]["rows"]] == ["local_mc acc, 0-shot", "local_mc acc_norm, 0-shot"]
    assert len(list((tmp_path / "res").glob("*.json"))) == 2

    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "by_hand.yaml").write_text(yaml.safe_dump({
        "task": "by_hand", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(mc_file)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}))
    for evaluation, path in zip(out["evaluations"], [run / "final_model", other], strict=True):
        model, tokenizer, _ = load_for_chat(path)
        hand = lm_eval.simple_evaluate(make_lm(model, tokenizer), tasks=["by_hand"],
                                       task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False))
        ours = {r["metric"]: r["value"] for r in evaluation["tasks"]}
        assert ours == {"acc": hand["results"]["by_hand"]["acc,none"], "acc_norm": hand["results"]["by_hand"]["acc_norm,none"]}
        assert evaluation["settings"]["chat_template"] is False


def test_chat_template_default_is_stated_and_follows_the_run(run, mc_file, tmp_path):
    result = runner.invoke(app, ["eval", str(run), "--task-file", str(mc_file), "--choices-column", "choices",
                                 "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "benchmarks without the chat template" in result.stderr and "mode pretrain" in result.stderr
    assert "local_mc acc" in result.stdout and "written:" in result.stdout


def test_generate_task_table_shows_the_filter(tok, tmp_path, monkeypatch):
    _model(tmp_path / "m", tok, seed=4)
    monkeypatch.chdir(tmp_path)  # a short column header: the table fits the test's 80 columns
    (tmp_path / "calc.jsonl").write_text("".join(json.dumps({"question": f"{i} + {i} = ?", "answer": f"#### {2 * i}"}) + "\n"
                                                 for i in range(3)))
    result = runner.invoke(app, ["eval", "m", "--task-file", "calc.jsonl", "--kind", "generate",
                                 "--max-new-tokens", "4", "--no-chat-template"])
    assert result.exit_code == 0, result.stderr
    assert "local_calc exact_match [normalised], 0-shot" in result.stdout


def _refused(args, *expected):
    result = runner.invoke(app, ["eval", *map(str, args)])
    assert result.exit_code == 2, result.output + result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


def test_bad_input_is_one_line_exit_2_and_nothing_written(tok, held, tmp_path):
    held = held[0]
    model = _model(tmp_path / "m", tok, seed=3)
    _refused([model, "--tasks", "helaswag"], "--tasks helaswag: no such lm-eval task or group; closest: hellaswag")
    _refused([tmp_path / "no-model", "--text", held], "no-model: no such folder")
    (tmp_path / "blank.jsonl").write_text('{"text": "  "}\n')
    _refused([model, "--text", tmp_path / "blank.jsonl"], "blank.jsonl: no text to score")
    (tmp_path / "qa.csv").write_text("prompt,options,gold\nq?,a,0\n")
    _refused([model, "--task-file", tmp_path / "qa.csv", "--choices", "a,b"],
             "no column 'question' (--question-column); columns found: prompt, options, gold")
    _refused([model], "nothing to evaluate")
    _refused([model, "--text", held, "--seq-len", "1000"], "--seq-len 1000")
    _refused([model, "--text", held, "--stride", "0"], "--stride 0")
    assert not (model / "eval").exists() and not (tmp_path / "eval").exists()


def test_benchmarks_without_the_hub_list_what_each_task_needs_and_run_nothing(tok, monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = _model(tmp_path / "m", tok, seed=3)
    err = _refused([model, "--suite", "seed"], "the Hugging Face hub is unreachable")
    assert "  mmlu: needs the hub dataset cais/mmlu" in err and "  gsm8k_cot: needs the hub dataset openai/gsm8k" in err
    assert sum(1 for line in err.splitlines() if ": needs the hub dataset" in line) == 5
    assert not (model / "eval").exists()


def test_written_paths_are_whole_lines_a_person_can_copy(run, held, tmp_path):
    """Without a terminal (here: a 40-column capture) each `written:` path stays on one line."""
    out = tmp_path / "a_rather_long_folder_name_for_the_results" / "of_this_evaluation"
    result = runner.invoke(app, ["eval", str(run / "final_model"), "--text", str(held[0]), "-o", str(out),
                                 "--max-documents", "2"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    written = [line for line in result.stdout.splitlines() if line.startswith("written:")]
    assert written and all(line.split("written: ", 1)[1].endswith(".json") for line in written)
    assert all((out / line.rsplit("/", 1)[1]).is_file() for line in written)
