"""The bridge to lm-evaluation-harness: task names and suites, datasets, running, results.

moai writes no scorer lm-eval already has. It hands lm-eval's `HFLM` the model and tokenizer it
already loaded, checks every task name against the installed lm-eval's task index (unknown
names get the closest real ones), and before running anything finds which hub dataset each
task reads (from the task's YAML, nothing downloaded): when the hub is unreachable and a
dataset is not in the local cache, it says so, one line per task, and runs nothing.

Suites are lists of (task, shots); each was checked against lm-eval 0.4.13's registry (a test
checks they still resolve). `None` shots = the task's own default.

    >>> [name for name, _ in SUITES["seed"]]
    ['mmlu', 'hellaswag', 'arc_challenge', 'truthfulqa_mc2', 'gsm8k_cot']
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.hub import hub_reachable

# The seed README's table: MMLU 5-shot, HellaSwag 10, ARC-Challenge 25, TruthfulQA 0 (mc2, as
# the Open LLM Leaderboard), GSM8K 8-shot chain of thought.
SUITES: dict[str, list[tuple[str, int | None]]] = {
    "seed": [("mmlu", 5), ("hellaswag", 10), ("arc_challenge", 25), ("truthfulqa_mc2", 0), ("gsm8k_cot", 8)],
    # KMMLU 5-shot as in its paper; KoBEST, HAE-RAE, CLIcK and HRM8K with their lm-eval defaults.
    "ko": [("kmmlu", 5), ("kobest", None), ("haerae", None), ("click", None), ("hrm8k", None)],
    "ja": [("japanese_leaderboard", None), ("global_mmlu_ja", None), ("belebele_jpn_Jpan", None)],
    # C-Eval and CMMLU 5-shot as in their papers.
    "zh": [("ceval-valid", 5), ("cmmlu", 5), ("global_mmlu_zh", None), ("belebele_zho_Hans", None)],
}
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (F1, MCC); lm-eval's 100k takes minutes


@dataclass
class TaskRequest:
    """One lm-eval task (name, or a generated config for a local file) and its shot count."""

    task: str | dict[str, Any]
    num_fewshot: int | None = None

    @property
    def name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task["task"]


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise MoaiInputError("lm-evaluation-harness is not installed (needed for --tasks, --suite, --task-file)",
                             hint="from a clone: pip install -e . (it installs lm-evaluation-harness); bits per byte (--text) works without it") from exc


@functools.lru_cache(maxsize=2)
def task_manager(include_defaults: bool = True):
    """lm-eval's TaskManager (indexing every built-in task takes a few seconds; done once)."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


def resolve_tasks(names: list[str], suites: list[str], num_fewshot: int | None) -> list[TaskRequest]:
    """Requests for `--tasks` names and `--suite` names; unknown names are refused with the
    closest known ones. `num_fewshot` (from --num-fewshot) overrides every shot count."""
    requests: list[TaskRequest] = []
    for suite in suites:
        if suite not in SUITES:
            raise MoaiInputError(f"--suite {suite}: no such suite", hint=f"use one of {', '.join(SUITES)}")
        requests += [TaskRequest(n, shots if num_fewshot is None else num_fewshot) for n, shots in SUITES[suite]]
    split = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if split:
        known = task_manager().all_tasks
        known_set = set(known)
        for name in split:
            if name not in known_set:
                close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
                raise MoaiInputError(f"--tasks {name}: no such lm-eval task or group"
                                     + (f"; closest: {', '.join(close)}" if close else ""),
                                     hint="`lm-eval ls tasks` lists them all")
            requests.append(TaskRequest(name, num_fewshot))
    return requests


def _leaf_configs(name: str, index: dict, depth: int = 0) -> list[dict[str, Any]]:
    """YAML configs (parsed, not built: nothing downloaded) of every task under a name."""
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None or depth > 8:
        return []
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [entry.cfg or {"class": name}]
    if entry.kind == Kind.TAG:
        return [e.cfg or {} for e in index.values() if name in e.tags and e.kind in (Kind.TASK, Kind.PY_TASK)]
    out: list[dict[str, Any]] = []
    for child in (entry.cfg or {}).get("task", []):
        child_name = child.get("task") if isinstance(child, dict) else child
        if isinstance(child_name, str) and child_name in index:
            out += _leaf_configs(child_name, index, depth + 1)
        elif isinstance(child, dict):
            out.append(child)
    return out


def datasets_needed(name: str) -> list[str]:
    """Hub datasets a task or group reads, e.g. ['allenai/ai2_arc'] for arc_challenge."""
    paths = {cfg.get("dataset_path") for cfg in _leaf_configs(name, task_manager().task_index)}
    return sorted(p for p in paths if isinstance(p, str))


def dataset_cached(path: str) -> bool:
    """Whether a hub dataset has files in the local datasets or hub cache (so it loads offline)."""
    import datasets
    from huggingface_hub import constants

    if Path(path).exists():
        return True
    return (Path(datasets.config.HF_DATASETS_CACHE) / path.replace("/", "___")).is_dir() or \
        (Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}").is_dir()


def check_datasets(requests: list[TaskRequest]) -> None:
    """Refuse (listing each task and the dataset it needs) when the hub is unreachable and a
    named task's dataset is not cached. Local tasks read local files and always pass."""
    named = [r.name for r in requests if isinstance(r.task, str)]
    if not named or hub_reachable():
        return
    lines = []
    for name in named:
        missing = [p for p in datasets_needed(name) if not dataset_cached(p)]
        if missing:
            lines.append(f"  {name}: needs the hub dataset {', '.join(missing)}")
    if lines:
        raise MoaiInputError("the Hugging Face hub is unreachable and these tasks' datasets are not cached:\n"
                             + "\n".join(lines),
                             hint="run where the hub is reachable (or with the datasets cached), or use --task-file with local data")


def make_lm(model: Any, tokenizer: Any, batch_size: int = 8, max_length: int | None = None):
    """lm-eval's HFLM around an already-loaded model and tokenizer.

    lm-eval asks for generations by total length; a model folder's generation_config carries
    moai chat's `max_new_tokens`, which transformers would put first (and warn), so the model
    given here loses it (eval loads its own copy) and `--max-new-tokens` decides."""
    import copy

    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if not os.environ.get("MOAI_VERBOSE"):
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(model.generation_config)  # not shared with other models
        model.generation_config.max_new_tokens = None
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


def run_tasks(lm: Any, requests: list[TaskRequest], limit: int | float | None = None,
              chat_template: bool = False) -> dict[str, Any]:
    """Run every request (grouped by shot count: one lm-eval call each) and merge the results:
    {"results": {task: {metric,filter: value}}, "n-shot": {...}, "group_subtasks": {...}}."""
    import lm_eval

    merged: dict[str, Any] = {"results": {}, "n-shot": {}, "group_subtasks": {}, "versions": {}}
    by_shots: dict[int | None, list[TaskRequest]] = {}
    for r in requests:
        by_shots.setdefault(r.num_fewshot, []).append(r)
    for shots, group in by_shots.items():
        tm = task_manager() if any(isinstance(r.task, str) for r in group) else task_manager(include_defaults=False)
        with _no_git_hash(), _bars_on_a_terminal_only():
            out = lm_eval.simple_evaluate(
                lm, tasks=[r.task for r in group], num_fewshot=shots, limit=limit, task_manager=tm,
                apply_chat_template=chat_template, fewshot_as_multiturn=chat_template,
                bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False,
            )
        for key in merged:
            merged[key].update(out.get(key) or {})
    return merged


@contextlib.contextmanager
def _bars_on_a_terminal_only():
    """Without a terminal (a log, a pipe) lm-eval's and datasets' progress bars are carriage-return
    noise between moai's lines: they are switched off there; on a terminal they stay."""
    import sys

    if sys.stderr.isatty():
        yield
        return
    import datasets
    import lm_eval.api.model as model_module
    import lm_eval.api.task as task_module
    import lm_eval.models.huggingface as hf_module

    saved = {m: m.tqdm for m in (model_module, task_module, hf_module)}
    bars_were_on = datasets.is_progress_bar_enabled()
    for module, bar in saved.items():
        module.tqdm = lambda *args, _bar=bar, **kwargs: _bar(*args, **{**kwargs, "disable": True})
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for module, bar in saved.items():
            module.tqdm = bar
        if bars_were_on:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _no_git_hash():
    """lm-eval records `git describe` of the working directory (the user's folder, not the
    evaluated model) and lets git print "fatal: not a git repository" outside one; moai's
    result files record moai's and lm-eval's versions instead, so the call is skipped."""
    import lm_eval.evaluator as evaluator

    saved = getattr(evaluator, "get_git_commit_hash", None)
    if saved is not None:
        evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        if saved is not None:
            evaluator.get_git_commit_hash = saved


def result_rows(results: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Flat rows {task, metric, filter, value, stderr, shots} for the requested names (a group
    without an aggregate shows its subtasks)."""
    rows: list[dict[str, Any]] = []
    table, subtasks, shots = results["results"], results.get("group_subtasks", {}), results.get("n-shot", {})

    def add(name: str, depth: int = 0) -> None:
        metrics = {k: v for k, v in table.get(name, {}).items() if "," in k and "_stderr" not in k}
        if not metrics and depth < 3:
            for child in subtasks.get(name, []):
                add(child, depth + 1)
            return
        for key, value in metrics.items():
            metric, flt = key.split(",", 1)
            if not isinstance(value, (int, float)):
                continue
            stderr = table[name].get(f"{metric}_stderr,{flt}")
            rows.append({"task": name, "metric": metric, "filter": flt, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                         "shots": shots.get(name)})

    for name in names:
        add(name)
    return rows
