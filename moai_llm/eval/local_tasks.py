"""Private evaluation sets as lm-evaluation-harness tasks, built from a file and a few flags.

`moai eval MODEL --task-file qa.csv --kind multiple-choice|generate ...` reads the file
(JSONL, JSON, CSV with or without a header, Parquet), checks the named columns, renders each
row's prompt and writes a normalised JSONL beside a generated lm-eval task config
(`dataset_path: json`, local data files). lm-eval then scores it exactly as it scores its own
tasks, so local and public tasks share one scorer:

- multiple-choice: `--choices-column` (a list, a JSON list, or several columns `A,B,C,D`) or a
  fixed label set `--choices "yes,no"`; `--answer-column` holds the right choice as its text, a
  0-based index or a letter. lm-eval's log-likelihood of each choice: `acc`, `acc_norm`.
- generate: greedy decoding up to `--max-new-tokens`; `exact_match` after normalisation
  (`normalise_answer`): when the reference holds a number, the final number of each side is
  compared (the GSM8K `#### N` form is recognised); otherwise text compared case-, space- and
  end-punctuation-insensitively.

A CSV has a header unless every column is given by position (`--question-column 0`); `header`
overrides. `--prompt-template` uses `{column}` placeholders (default
"Question: {QUESTION}\\nAnswer:"); few-shot examples come from `--fewshot-file` (same columns) or,
without one, from the task file itself (lm-eval never shows a question its own answer).

    >>> normalise_answer("She has 3 + 4 = 7 apples.\\n#### 1,234.50", numeric=True)
    '1234.5'
    >>> normalise_answer("  The Eiffel Tower!  ", numeric=False)
    'the eiffel tower'
"""

from __future__ import annotations

import csv
import json
import re
import string
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_jsonl_atomic
from moai_llm.errors import MoaiInputError

KINDS = ("multiple-choice", "generate")
DEFAULT_TEMPLATE = "Question: {%s}\nAnswer:"
STOP_SEQUENCES = ["\n\n", "<|im_end|>", "<|endoftext|>"]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_number(text: str) -> str | None:
    """The last number in `text` (after `####` when present), canonical: "1,234.50" -> "1234.5"."""
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value != 0 else "0"


def normalise_answer(text: str, numeric: bool) -> str:
    """What exact match compares: the final number, or lower-cased text without extra spaces
    and surrounding punctuation."""
    if numeric:
        return final_number(text) or ""
    text = unicodedata.normalize("NFKC", text).lower()
    text = " ".join(text.split())
    return text.strip(string.punctuation + " 。、！？")


def normalise_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter: each generated answer normalised the way its reference was."""
    return [[normalise_answer(r, bool(doc.get("numeric"))) for r in rs] for rs, doc in zip(resps, docs, strict=True)]


@dataclass
class LocalTask:
    """The flags of `moai eval --task-file`."""

    file: str
    kind: str = "multiple-choice"
    question_column: str = "question"
    choices_column: str | None = None  # "choices" or several columns "A,B,C,D"
    choices: str | None = None  # a fixed label set, "yes,no"
    answer_column: str = "answer"
    prompt_template: str | None = None
    fewshot_file: str | None = None
    fewshot: int = 0
    max_new_tokens: int = 256
    header: bool | None = None  # CSV only; None: a header unless columns are positions

    @property
    def name(self) -> str:
        return "local_" + re.sub(r"\W+", "_", Path(self.file).stem).strip("_").lower()

    def columns(self) -> list[str]:
        cols = [self.question_column, self.answer_column]
        if self.kind == "multiple-choice" and self.choices_column:
            cols += [c.strip() for c in self.choices_column.split(",")]
        return cols


# ---------------------------------------------------------------- reading rows


def read_rows(path: str | Path, header: bool | None, positional: bool) -> list[tuple[dict[str, Any], str]]:
    """(record, location) for every row; a headerless CSV's columns are named "0", "1", ..."""
    from moai_llm.data import sources as src_mod

    p = Path(path).expanduser()
    if not p.is_file():
        raise MoaiInputError(f"--task-file {path}: no such file")
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise MoaiInputError(f"--task-file {path}: unsupported file type '{p.suffix}'", hint="use .jsonl, .json, .csv or .parquet")
    if suffix == ".csv" and (header is False or (header is None and positional)):
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            rows = [({str(i): v for i, v in enumerate(row)}, f"{p}:{reader.line_num}") for row in reader if row]
    else:
        source = src_mod.resolve_sources([str(p)])[0]
        rows = list(src_mod.iter_records(source, src_mod.BadRows(skip=False)))
    if not rows:
        raise MoaiInputError(f"--task-file {path}: no rows")
    return rows


def _check_columns(rows, task: LocalTask, flags: dict[str, str]) -> None:
    record, where = rows[0]
    found = ", ".join(map(str, record)) or "(none)"
    for column in task.columns():
        if column not in record:
            flag = next((f for f, c in flags.items() if column in [x.strip() for x in c.split(",")]), "")
            raise MoaiInputError(f"{where.rsplit(':', 1)[0]}: no column '{column}' ({flag}); columns found: {found}",
                                 hint="name the right columns with --question-column / --choices-column / --answer-column")


def _choices(record: dict, task: LocalTask, where: str) -> list[str]:
    if task.choices:
        return [c.strip() for c in task.choices.split(",") if c.strip()]
    cols = [c.strip() for c in (task.choices_column or "").split(",")]
    if len(cols) > 1:
        return [str(record[c]) for c in cols]
    value = record[cols[0]]
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MoaiInputError(f"{where}: column '{cols[0]}' is not a JSON list ({exc})") from exc
    if not isinstance(value, list) or len(value) < 2:
        raise MoaiInputError(f"{where}: column '{cols[0]}' must hold a list of at least 2 choices",
                             hint="or name several columns: --choices-column A,B,C,D")
    return [str(v) for v in value]


def answer_index(answer: Any, choices: list[str], where: str) -> int:
    """The right choice: its text, a 0-based index or a letter (A = first)."""
    text = str(answer).strip()
    if text in choices:
        return choices.index(text)
    if re.fullmatch(r"\d+", text) and int(text) < len(choices):
        return int(text)
    if len(text) == 1 and text.upper() in string.ascii_uppercase[: len(choices)]:
        return string.ascii_uppercase.index(text.upper())
    raise MoaiInputError(f"{where}: answer '{text}' is not one of the choices ({', '.join(choices)}), "
                         f"an index below {len(choices)} or a letter A-{string.ascii_uppercase[len(choices) - 1]}")


def render(template: str, record: dict[str, Any]) -> str:
    """`template` with each {column} replaced by the record's value ({{ and }} are braces).

    >>> render("Q: {question} ({0})", {"question": "why?", "0": "x"})
    'Q: why? (x)'
    """
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise MoaiInputError(f"--prompt-template: {exc}", hint="use {column} placeholders; write {{ and }} for braces") from exc
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if name not in record:
            raise MoaiInputError(f"--prompt-template: placeholder '{name}' is not a column; columns found: "
                                 f"{', '.join(map(str, record))}", hint="use {column} placeholders")
        value = "" if record[name] is None else record[name]
        value = repr(value) if conversion == "r" else value
        out.append(format(value, spec or ""))
    return "".join(out)


def _normalised(rows, task: LocalTask, template: str) -> list[dict[str, Any]]:
    out = []
    for record, where in rows:
        for column in task.columns():
            if column not in record:
                raise MoaiInputError(f"{where}: no column '{column}'")
        prompt = render(template, record)
        if task.kind == "multiple-choice":
            choices = _choices(record, task, where)
            out.append({"prompt": prompt, "choices": choices,
                        "answer": answer_index(record[task.answer_column], choices, where)})
        else:
            answer = str(record[task.answer_column])
            numeric = final_number(answer) is not None
            out.append({"prompt": prompt, "target": normalise_answer(answer, numeric), "numeric": numeric,
                        "answer_text": answer})
    return out


# ---------------------------------------------------------------- the lm-eval task


def build_task(task: LocalTask, workdir: str | Path) -> dict[str, Any]:
    """Check the file and flags, write the normalised data into `workdir` and return the
    lm-eval task config (a dict `lm_eval.simple_evaluate(tasks=[config])` takes)."""
    if task.kind not in KINDS:
        raise MoaiInputError(f"--kind {task.kind}: use one of {', '.join(KINDS)}")
    if task.kind == "multiple-choice" and not (task.choices_column or task.choices):
        raise MoaiInputError("--kind multiple-choice needs --choices-column COLUMN(S) or --choices \"a,b,...\"")
    if task.fewshot < 0 or task.max_new_tokens < 1:
        raise MoaiInputError("--fewshot must be >= 0 and --max-new-tokens >= 1")
    flags = {"--question-column": task.question_column, "--answer-column": task.answer_column,
             "--choices-column": task.choices_column or ""}
    positional = all(re.fullmatch(r"\d+", c) for c in task.columns())
    template = task.prompt_template or DEFAULT_TEMPLATE % task.question_column
    rows = read_rows(task.file, task.header, positional)
    _check_columns(rows, task, flags)
    workdir = Path(workdir)
    data_files = {"test": str(write_jsonl_atomic(workdir / f"{task.name}.test.jsonl", _normalised(rows, task, template)))}
    if task.fewshot_file:
        shots = read_rows(task.fewshot_file, task.header, positional)
        _check_columns(shots, task, flags)
        records = _normalised(shots, task, template)
        if task.kind == "generate":
            for r in records:  # few-shot examples show the whole answer (e.g. the worked solution)
                r["target"] = r["answer_text"]
        data_files["train"] = str(write_jsonl_atomic(workdir / f"{task.name}.fewshot.jsonl", records))
    config: dict[str, Any] = {
        "task": task.name, "dataset_path": "json", "dataset_kwargs": {"data_files": data_files},
        "test_split": "test", "doc_to_text": "prompt", "num_fewshot": task.fewshot,
        "metadata": {"version": 1.0, "moai_task_file": str(Path(task.file).resolve()), "kind": task.kind},
    }
    if task.fewshot:
        config["fewshot_split"] = "train" if task.fewshot_file else "test"
    if task.kind == "multiple-choice":
        config.update(output_type="multiple_choice", doc_to_choice="choices", doc_to_target="answer",
                      metric_list=[{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")])
    else:
        until = STOP_SEQUENCES + (["Question:"] if task.prompt_template is None else [])
        config.update(output_type="generate_until", doc_to_target="target",
                      generation_kwargs={"until": until, "do_sample": False, "max_gen_toks": task.max_new_tokens},
                      filter_list=[{"name": "normalised", "filter": [{"function": "custom", "filter_fn": normalise_predictions},
                                                                     {"function": "take_first"}]}],
                      metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}])
    return config
