"""`moai eval`: bits per byte on held-out text, lm-eval benchmarks and local task files, for one
model, several (a column each) or every checkpoint of a run. The work happens in
`moai_llm.eval` (evaluate.run_eval); this module parses flags and draws the table.

    moai eval outputs/pretrain --text held_out.jsonl
    moai eval outputs/pretrain --all-checkpoints --text held_out.jsonl      # + eval/bpb.png
    moai eval outputs/pretrain outputs/sft --suite seed --limit 100
    moai eval outputs/sft --task-file qa.csv --kind multiple-choice --choices-column A,B,C,D
    moai eval outputs/dpo outputs/sft --pairs held_out_pairs.jsonl      # preference accuracy, margin
"""

from __future__ import annotations

from typing import Optional

import typer

from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet


def register(app: typer.Typer) -> None:
    app.command(name="eval", cls=MoaiCommand)(eval_models)


TEXT, BENCH, LOCAL, PAIRS = "Held-out text: bits per byte", "Benchmarks (lm-eval)", "Local task file", "Preference pairs"
MODEL, OUT = "Model and device", "Output"


def eval_models(
    models: list[str] = typer.Argument(..., metavar="MODEL", help="Model folders, run folders or Qwen3 folders (a column each)."),
    text: list[str] = typer.Option(None, "--text", metavar="SOURCE", rich_help_panel=TEXT, help="Held-out text: file, folder, glob or hub dataset (repeatable)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", metavar="NAME", rich_help_panel=TEXT, show_default="detected", help="Column with the text."),
    text_split: str = typer.Option("test", "--text-split", metavar="SPLIT", rich_help_panel=TEXT, help="Split of a hub dataset given to --text."),
    text_config: Optional[str] = typer.Option(None, "--text-config", metavar="NAME", rich_help_panel=TEXT, help="Config of a hub dataset given to --text."),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", metavar="N", rich_help_panel=TEXT, show_default="all", help="Score at most this many documents."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", metavar="N", rich_help_panel=TEXT, show_default="the run's, else the model's context up to 2048", help="Tokens per row."),
    stride: Optional[int] = typer.Option(None, "--stride", metavar="N", rich_help_panel=TEXT, show_default="seq_len - 1", help="Tokens scored per window of a long document (smaller: more context, more compute)."),
    all_checkpoints: bool = typer.Option(False, "--all-checkpoints", rich_help_panel=TEXT, help="Every checkpoints/step-N of each run, in step order, and a plot eval/bpb.png."),
    tasks: list[str] = typer.Option(None, "--tasks", metavar="NAMES", rich_help_panel=BENCH, help="lm-eval tasks or groups, comma-separated or repeated."),
    suite: list[str] = typer.Option(None, "--suite", metavar="NAME", rich_help_panel=BENCH, help="Named suite: seed, ko, ja, zh (repeatable)."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", metavar="N", rich_help_panel=BENCH, show_default="the suite's, else the task's", help="Shots for every task."),
    limit: Optional[float] = typer.Option(None, "--limit", metavar="N", rich_help_panel=BENCH, show_default="all", help="Examples per task (a fraction below 1: a share); for quick looks."),
    chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template", rich_help_panel=BENCH, show_default="from the run: on for sft, off for pretrain", help="Score through the chat template (--no-chat-template: never)."),
    task_file: Optional[str] = typer.Option(None, "--task-file", metavar="FILE", rich_help_panel=LOCAL, help="Local evaluation set (.jsonl, .json, .csv, .parquet), run as an lm-eval task."),
    kind: str = typer.Option("multiple-choice", "--kind", metavar="KIND", rich_help_panel=LOCAL, help="multiple-choice or generate."),
    question_column: str = typer.Option("question", "--question-column", metavar="COLUMN", rich_help_panel=LOCAL, help="Column with the question (a name, or a position for a CSV without header)."),
    choices_column: Optional[str] = typer.Option(None, "--choices-column", metavar="COLUMNS", rich_help_panel=LOCAL, help="Column holding a list of choices, or several columns: A,B,C,D."),
    choices: Optional[str] = typer.Option(None, "--choices", metavar="LABELS", rich_help_panel=LOCAL, help='A fixed label set for every row, e.g. "yes,no".'),
    answer_column: str = typer.Option("answer", "--answer-column", metavar="COLUMN", rich_help_panel=LOCAL, help="Column with the answer: choice text, 0-based index or letter (generate: the reference)."),
    prompt_template: Optional[str] = typer.Option(None, "--prompt-template", metavar="TEXT", rich_help_panel=LOCAL, show_default="Question: {question}\\nAnswer:", help="Prompt with {column} placeholders."),
    fewshot_file: Optional[str] = typer.Option(None, "--fewshot-file", metavar="FILE", rich_help_panel=LOCAL, show_default="the task file", help="Few-shot examples with the same columns."),
    fewshot: int = typer.Option(0, "--fewshot", metavar="N", rich_help_panel=LOCAL, help="Few-shot examples per question."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", metavar="N", rich_help_panel=LOCAL, help="generate: longest answer in tokens (greedy)."),
    csv_header: Optional[bool] = typer.Option(None, "--csv-header/--no-csv-header", rich_help_panel=LOCAL, show_default="yes, unless columns are positions", help="Whether a CSV task file has a header row (--no-csv-header: it has none)."),
    pairs: Optional[str] = typer.Option(None, "--pairs", metavar="FILE", rich_help_panel=PAIRS, help="Held-out preference pairs (prompt, chosen, rejected; any schema of `data prepare --mode preference`): accuracy and mean margin."),
    reference: Optional[str] = typer.Option(None, "--reference", metavar="MODEL", rich_help_panel=PAIRS, show_default="none: mean log-prob per answer token", help="Rewards are beta * (log-prob - this model's log-prob), DPO's implicit reward."),
    beta: float = typer.Option(0.1, "--beta", metavar="X", rich_help_panel=PAIRS, help="With --reference: the reward's scale."),
    batch_size: int = typer.Option(8, "--batch-size", metavar="N", rich_help_panel=MODEL, help="Rows per forward pass (text) and lm-eval's batch size."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", rich_help_panel=MODEL, show_default="GPU when present", help="cuda, cuda:1 or cpu."),
    dtype: Optional[str] = typer.Option(None, "--dtype", metavar="DTYPE", rich_help_panel=MODEL, show_default="bf16 on GPU, fp32 on CPU", help="bfloat16, float16 or float32."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", metavar="DIR", rich_help_panel=MODEL, help="Tokenizer folder when the model folder has none."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", rich_help_panel=MODEL, help="Allow code shipped with the model to run (only for folders you trust)."),
    output: Optional[str] = typer.Option(None, "--output", metavar="DIR", rich_help_panel=OUT, show_default="RUN/eval/", help="Folder for the result JSONs."),
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUT, help="Print every figure as JSON."),
) -> None:
    """Evaluate models: bits per byte on held-out text, lm-eval benchmarks, local task files."""
    with handle_errors():
        from moai_llm.eval.evaluate import EvalRequest, run_eval
        from moai_llm.eval.local_tasks import LocalTask

        if json_out:
            set_quiet(True)
        _check_floats(limit, beta)
        local = None
        if task_file:
            local = LocalTask(task_file, kind, question_column, choices_column, choices, answer_column,
                              prompt_template, fewshot_file, fewshot, max_new_tokens, csv_header)
        req = EvalRequest(
            models=models, all_checkpoints=all_checkpoints, text=list(text or []), text_column=text_column,
            text_split=text_split, text_config=text_config, max_documents=max_documents, seq_len=seq_len,
            stride=stride, batch_size=batch_size, tasks=list(tasks or []), suites=list(suite or []),
            num_fewshot=num_fewshot, limit=int(limit) if limit and limit >= 1 else limit, local=local,
            chat_template=chat_template, output=output, device=device, dtype=dtype, tokenizer=tokenizer,
            trust_remote_code=trust_remote_code, pairs=pairs, reference=reference, beta=beta,
        )
        result = run_eval(req)
        if json_out:
            print_json(result)
            return
        _render(result)


def _check_floats(limit: float | None, beta: float) -> None:
    """--limit and --beta finite and positive (NaN or inf would reach lm-eval or the rewards)."""
    import math

    from moai_llm.errors import MoaiInputError

    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise MoaiInputError(f"--limit must be a positive finite number (examples, or a share below 1), got {limit}")
    if not (math.isfinite(beta) and beta > 0):
        raise MoaiInputError(f"--beta must be a positive finite number, got {beta}")


def _render(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    tab = result["table"]
    table = Table(*map(escape, tab["columns"]), title="moai eval")
    for row in tab["rows"]:
        table.add_row(*map(escape, row))  # "[normalised]" is a filter name, not markup
    console.print(table)
    # Paths are printed whole (soft_wrap): a path broken across lines cannot be copied.
    for path in result["written"]:
        console.print(f"[dim]written:[/] {escape(str(path))}", highlight=False, soft_wrap=True)
    for path in result["plots"]:
        console.print(f"[dim]drawn:[/] {escape(str(path))}", highlight=False, soft_wrap=True)
