"""`moai data prepare | inspect`: thin CLI over moai_llm.data (prepare.py, inspect.py).

    moai data prepare --input corpus.jsonl --tokenizer tok/ --seq-len 2048 --output-dir prepared/
    moai data inspect prepared/ --show 2
"""

from __future__ import annotations

from pathlib import Path

import typer

from moai_cli.ui import console, handle_errors, print_json, set_quiet

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


@app.command()
def prepare(
    inputs: list[str] = typer.Option(None, "--input", "-i", help="File, folder or glob (.jsonl/.json/.csv/.parquet/.txt/.arrow); repeatable."),
    weights: list[str] = typer.Option(None, "--weights", help="Mixing weight per source (1 = once, 2 = twice, 0.5 = half); repeatable or comma-separated."),
    tokenizer: str = typer.Option(..., "--tokenizer", "--tokenizer-path", "--tokenizer_path", help="Tokenizer folder (tokenizer.json)."),
    seq_len: int = typer.Option(2048, "--seq-len", "--seq_len", "--max-seq-length", "--max_seq_length", help="Tokens per row."),
    output_dir: Path = typer.Option(..., "--output-dir", "--output_dir", "-o", help="Prepared dataset folder."),
    mode: str = typer.Option("pretrain", "--mode", help="pretrain (plain text), sft (conversations) or preference (chosen/rejected pairs)."),
    text_column: str = typer.Option(None, "--text-column", "--text_column", help="Column with the text (default: detected)."),
    dataset: str = typer.Option(None, "--dataset", help="Hub dataset name (streamed)."),
    dataset_config: str = typer.Option(None, "--dataset-config", "--dataset_config", help="Hub dataset config."),
    split: str = typer.Option("train", "--split", help="Hub dataset split."),
    prompt_column: str = typer.Option(None, "--prompt-column", "--prompt_column", help="SFT: column with the user prompt."),
    response_column: str = typer.Option(None, "--response-column", "--response_column", help="SFT: column with the answer."),
    chosen_column: str = typer.Option(None, "--chosen-column", help="Preference: column with the preferred answer (default: chosen)."),
    rejected_column: str = typer.Option(None, "--rejected-column", help="Preference: column with the rejected answer (default: rejected)."),
    truncation: str = typer.Option("keep_start", "--truncation", help="Preference: a sequence longer than half a row keeps its first (keep_start) or last (keep_end) tokens, as TRL."),
    system_prompt: str = typer.Option(None, "--system-prompt", "--system_prompt", help="SFT: system message for records without one."),
    thinking: str = typer.Option("off", "--thinking", help="SFT with a thinking chat template (Qwen3): off = answers only (the empty think block is prompt), keep = train the reasoning in assistant messages too."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", "--skip_bad_rows", help="Count and skip malformed rows instead of stopping."),
    packing: str = typer.Option("bfd", "--packing", help="bfd (best-fit-decreasing) or hierarchical (balanced rows)."),
    num_proc: int = typer.Option(None, "--num-proc", "--num_proc", help="Rust tokenizer threads (default: all cores when there are more than 2; a reader thread overlaps tokenizing with packing)."),
    max_positions: int = typer.Option(None, "--max-positions", help="The model's context length (max_position_embeddings): refuse longer rows."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", "--trust_remote_code", help="Allow a tokenizer folder defined by its own Python code (auto_map) to run it (off: moai reads tokenizer.json only)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the cache matches."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    workers: int = typer.Option(None, "--workers", help="Tasks run at once: local processes (default 1); Slurm/Ray: tasks at once (default: all).", rich_help_panel=_PAR),
    tasks: int = typer.Option(None, "--tasks", help="Shares of the input, each tokenized and packed by one task (default: one per 128 MB, at least --workers); rows depend on it.", rich_help_panel=_PAR),
    executor: str = typer.Option("local", "--executor", help="local (this machine), slurm (a job array) or ray (a Ray cluster).", rich_help_panel=_PAR),
    partition: str = typer.Option(None, "--partition", help="Slurm partition (default: the cluster's default).", rich_help_panel=_PAR),
    time_limit: str = typer.Option("04:00:00", "--time", help="Slurm time limit per task.", rich_help_panel=_PAR),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="CPUs per task (Slurm, Ray).", rich_help_panel=_PAR),
    mem_per_cpu: int = typer.Option(2, "--mem-per-cpu", help="GB of memory per CPU (Slurm, Ray).", rich_help_panel=_PAR),
    qos: str = typer.Option(None, "--qos", help="Slurm QOS.", rich_help_panel=_PAR),
    account: str = typer.Option(None, "--account", help="Slurm account.", rich_help_panel=_PAR),
    sbatch: list[str] = typer.Option(None, "--sbatch", help="More sbatch options as KEY=VALUE (e.g. constraint=cpu); repeatable.", rich_help_panel=_PAR),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster to join (auto, ray://HOST:10001; default: start one here).", rich_help_panel=_PAR),
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


@app.command()
def inspect(
    folder: Path = typer.Argument(..., help="Prepared dataset folder."),
    show: int = typer.Option(0, "--show", help="Decode the first N rows, loss-carrying text highlighted."),
    tokenizer: str = typer.Option(None, "--tokenizer", "--tokenizer_path", help="Tokenizer to decode with (default: the one it was built with)."),
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
