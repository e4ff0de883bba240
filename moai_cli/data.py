"""`moai data prepare | inspect`: thin CLI over moai_llm.data (prepare.py, inspect.py).

    moai data prepare --input corpus.jsonl --tokenizer tok/ --seq-len 2048 --output-dir prepared/
    moai data inspect prepared/ --show 2
"""

from __future__ import annotations

from pathlib import Path

import typer

from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet
from moai_llm.defaults import SEQ_LEN

app = typer.Typer(no_args_is_help=True)


def _weights(values: list[str] | None) -> list[float] | None:
    from moai_llm.errors import MoaiInputError

    if not values:
        return None
    out = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                out.append(float(part))
            except ValueError as exc:
                raise MoaiInputError(f"--weights: '{part}' is not a number", hint="e.g. --weights 0.7 --weights 0.3") from exc
    return out


_PAR = "Parallel preparation"
IN, ROWS, CHAT, OUT = "Input", "Tokens and rows", "SFT and preference", "Output"


def _executor(kind, workers, partition, time_limit, cpus_per_task, mem_per_cpu, qos, account, sbatch, ray_address):
    from moai_llm.data.executors import Executor
    from moai_llm.errors import MoaiInputError

    extra = {}
    for item in sbatch or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise MoaiInputError(f"--sbatch {item}: expected KEY=VALUE", hint="e.g. --sbatch constraint=cpu")
        extra[name.strip().lstrip("-")] = value
    return Executor(kind=kind, workers=workers, partition=partition, time=time_limit, cpus_per_task=cpus_per_task,
                    mem_per_cpu_gb=mem_per_cpu, qos=qos, account=account, sbatch_args=extra, ray_address=ray_address)


@app.command(cls=MoaiCommand)
def prepare(
    inputs: list[str] = typer.Option(None, "--input", metavar="SRC", rich_help_panel=IN, help="File, folder or glob (.jsonl, .json, .csv, .parquet, .txt, .arrow); repeatable."),
    weights: list[str] = typer.Option(None, "--weights", metavar="W", rich_help_panel=IN, help="Mixing weight per source (1 = once, 2 = twice, 0.5 = half); repeatable or comma-separated."),
    mode: str = typer.Option("pretrain", "--mode", metavar="MODE", rich_help_panel=IN, help="pretrain (plain text), sft (conversations) or preference (chosen/rejected pairs)."),
    text_column: str = typer.Option(None, "--text-column", metavar="NAME", rich_help_panel=IN, show_default="detected", help="Column with the text."),
    dataset: str = typer.Option(None, "--dataset", metavar="NAME", rich_help_panel=IN, help="Hub dataset name (streamed)."),
    dataset_config: str = typer.Option(None, "--dataset-config", metavar="NAME", rich_help_panel=IN, help="Hub dataset config."),
    split: str = typer.Option("train", "--split", metavar="NAME", rich_help_panel=IN, help="Hub dataset split."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", rich_help_panel=IN, help="Count and skip malformed rows instead of stopping."),
    tokenizer: str = typer.Option(..., "--tokenizer", metavar="DIR", rich_help_panel=ROWS, help="Tokenizer folder (tokenizer.json)."),
    seq_len: int = typer.Option(SEQ_LEN, "--seq-len", metavar="N", rich_help_panel=ROWS, help="Tokens per row."),
    packing: str = typer.Option("bfd", "--packing", metavar="HOW", rich_help_panel=ROWS, help="bfd (best-fit-decreasing) or hierarchical (balanced rows)."),
    max_positions: int = typer.Option(None, "--max-positions", metavar="N", rich_help_panel=ROWS, help="The model's context length (max_position_embeddings): refuse longer rows."),
    num_proc: int = typer.Option(None, "--num-proc", metavar="N", rich_help_panel=ROWS, show_default="all cores when there are more than 2", help="Rust tokenizer threads (a reader thread overlaps tokenizing with packing)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", rich_help_panel=ROWS, help="Allow a tokenizer folder defined by its own Python code (auto_map) to run it (off: moai reads tokenizer.json only)."),
    prompt_column: str = typer.Option(None, "--prompt-column", metavar="NAME", rich_help_panel=CHAT, help="SFT: column with the user prompt."),
    response_column: str = typer.Option(None, "--response-column", metavar="NAME", rich_help_panel=CHAT, help="SFT: column with the answer."),
    system_prompt: str = typer.Option(None, "--system-prompt", metavar="TEXT", rich_help_panel=CHAT, help="SFT: system message for records without one."),
    thinking: str = typer.Option("off", "--thinking", metavar="HOW", rich_help_panel=CHAT, help="SFT with a thinking chat template (Qwen3): off = answers only (the empty think block is prompt), keep = train the reasoning in assistant messages too."),
    chosen_column: str = typer.Option(None, "--chosen-column", metavar="NAME", rich_help_panel=CHAT, show_default="chosen", help="Preference: column with the preferred answer."),
    rejected_column: str = typer.Option(None, "--rejected-column", metavar="NAME", rich_help_panel=CHAT, show_default="rejected", help="Preference: column with the rejected answer."),
    truncation: str = typer.Option("keep_start", "--truncation", metavar="HOW", rich_help_panel=CHAT, help="Preference: a sequence longer than half a row keeps its first (keep_start) or last (keep_end) tokens, as TRL."),
    output_dir: Path = typer.Option(..., "--output-dir", metavar="DIR", rich_help_panel=OUT, help="Prepared dataset folder."),
    force: bool = typer.Option(False, "--force", rich_help_panel=OUT, help="Rebuild even when the cache matches."),
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUT, help="Print the manifest as JSON."),
    workers: int = typer.Option(None, "--workers", metavar="N", show_default="local: 1; Slurm, Ray: all", help="Tasks run at once: local processes, or Slurm/Ray tasks.", rich_help_panel=_PAR),
    tasks: int = typer.Option(None, "--tasks", metavar="N", show_default="one per 128 MB, at least --workers", help="Shares of the input, each tokenized and packed by one task; rows depend on it.", rich_help_panel=_PAR),
    executor: str = typer.Option("local", "--executor", metavar="NAME", help="local (this machine), slurm (a job array) or ray (a Ray cluster).", rich_help_panel=_PAR),
    partition: str = typer.Option(None, "--partition", metavar="NAME", show_default="the cluster's", help="Slurm partition.", rich_help_panel=_PAR),
    time_limit: str = typer.Option("04:00:00", "--time", metavar="HH:MM:SS", help="Slurm time limit per task.", rich_help_panel=_PAR),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", metavar="N", help="CPUs per task (Slurm, Ray).", rich_help_panel=_PAR),
    mem_per_cpu: int = typer.Option(2, "--mem-per-cpu", metavar="GB", help="GB of memory per CPU (Slurm, Ray).", rich_help_panel=_PAR),
    qos: str = typer.Option(None, "--qos", metavar="NAME", help="Slurm QOS.", rich_help_panel=_PAR),
    account: str = typer.Option(None, "--account", metavar="NAME", help="Slurm account.", rich_help_panel=_PAR),
    sbatch: list[str] = typer.Option(None, "--sbatch", metavar="KEY=VALUE", help="More sbatch options (e.g. constraint=cpu); repeatable.", rich_help_panel=_PAR),
    ray_address: str = typer.Option(None, "--ray-address", metavar="ADDRESS", show_default="start one here", help="Ray cluster to join (auto, ray://HOST:10001).", rich_help_panel=_PAR),
) -> None:
    """Tokenize and pack sources into a prepared dataset (Arrow rows + manifest.json), cached."""
    with handle_errors():
        from moai_llm.data import prepare_dataset

        if json_out:
            set_quiet(True)
        mapping = {k: v for k, v in (("prompt", prompt_column), ("response", response_column), ("system", system_prompt),
                                     ("chosen", chosen_column), ("rejected", rejected_column)) if v}
        manifest = prepare_dataset(
            inputs, tokenizer, seq_len, output_dir, mode, weights=_weights(weights), text_column=text_column,
            mapping=mapping or None, packing=packing, skip_bad_rows=skip_bad_rows, num_proc=num_proc,
            dataset=dataset, dataset_config=dataset_config, split=split, max_positions=max_positions, force=force,
            thinking=thinking, trust_remote_code=trust_remote_code, truncation=truncation, tasks=tasks,
            executor=_executor(executor, workers, partition, time_limit, cpus_per_task, mem_per_cpu, qos, account,
                               sbatch, ray_address),
        )
        if json_out:
            print_json(manifest)
            return
        _print_manifest(manifest)


def _print_manifest(manifest: dict) -> None:
    tasks = f" in {manifest['tasks']} tasks" if manifest.get("tasks", 1) > 1 else ""
    state = "cache hit: already prepared" if manifest["cache_hit"] else f"built{tasks} in {manifest['build_seconds']:.1f} s"
    console.print(f"[bold]{manifest['output_dir']}[/] ({state})")
    console.print(f"  {manifest['num_rows']:,} rows × {manifest['seq_len']} tokens, {manifest['num_tokens']:,} tokens "
                  f"from {manifest['num_documents']:,} documents")
    console.print(f"  packing efficiency {manifest['packing_efficiency']:.2%}; documents split (longer than a row) "
                  f"{manifest['docs_split']:,}; tokens cut {manifest['tokens_cut']:,}; tokens dropped {manifest['tokens_dropped']:,}")
    if manifest.get("conversations_truncated"):
        console.print(f"  [yellow]{manifest['conversations_truncated']:,} conversations longer than a row[/]: kept their "
                      f"first {manifest['seq_len']} tokens, {manifest['dropped_documents']:,} dropped whole "
                      f"(first: {manifest['first_truncated']})")
    if pref := manifest.get("preference"):
        console.print(f"  {pref['num_pairs']:,} pairs; {pref['pairs_truncated']:,} truncated to {pref['max_length']} "
                      f"tokens per sequence ({pref['truncation']}), {pref['pairs_dropped']:,} dropped")
    if manifest["skipped_rows"]:
        console.print(f"  [yellow]skipped {manifest['skipped_rows']:,} bad rows[/] (first: {manifest['first_skipped_row']})")


@app.command(cls=MoaiCommand)
def inspect(
    folder: Path = typer.Argument(..., metavar="FOLDER", help="Prepared dataset folder."),
    show: int = typer.Option(0, "--show", metavar="N", help="Decode the first N rows, loss-carrying text highlighted."),
    tokenizer: str = typer.Option(None, "--tokenizer", metavar="DIR", show_default="the one it was built with", help="Tokenizer to decode with."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Rows, tokens, documents, sources, packing efficiency, length histogram, decoded rows."""
    with handle_errors():
        from moai_llm.data.inspect import decoded_rows, histogram_lines, summary

        info = summary(folder)
        rows = decoded_rows(folder, show, tokenizer) if show else []
        if json_out:
            print_json({**info, "rows": rows})
            return
        _render(info, rows, histogram_lines(info["doc_length_histogram"]))


def _render(info: dict, rows: list, histogram: list[str]) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(f"[bold]{info['path']}[/]  ({info['mode']}, {info['packing']} packing, seq_len {info['seq_len']})")
    console.print(f"  rows {info['num_rows']:,}   tokens {info['num_tokens']:,}   documents {info['num_documents']:,}")
    console.print(f"  packing efficiency {info['packing_efficiency']:.2%}   documents split {info['docs_split']:,}   "
                  f"tokens cut {info['tokens_cut']:,}   tokens dropped {info['tokens_dropped']:,}   bad rows skipped {info['skipped_rows']:,}")
    table = Table("source", "weight", "documents", "tokens", "share")
    for s in info["sources"]:
        table.add_row(s["spec"], f"{s['weight']:g}", f"{s['documents']:,}", f"{s['tokens']:,}", f"{s['token_share']:.1%}")
    console.print(table)
    console.print("document lengths (tokens):")
    for line in histogram:
        console.print("  " + line, highlight=False)
    for i, segments in enumerate(rows):
        console.print(f"\n[bold]row {i}[/] ([green underline]loss[/], [dim]no loss[/], │ document boundary)")
        text, doc = Text(), 0
        for seg in segments:
            if seg["doc"] != doc:
                text.append(" │ ", style="bold magenta")
                doc = seg["doc"]
            text.append(seg["text"], style="green underline" if seg["loss"] else "dim")
        console.print(text)
