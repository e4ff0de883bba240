"""`moai tokenizer train | extend | compare`: thin CLI over moai_llm.tokenizer.

    moai tokenizer train --multilingual ko en --vocab-size 8000 --output-dir tokenizers/mine
    moai tokenizer extend --base-tokenizer tokenizers/mine --input finance.jsonl --vocab-size 9000
    moai tokenizer compare tokenizers/mine tokenizers/mine-finance

Heavy imports (tokenizers, transformers, datasets) happen inside the commands.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet

app = typer.Typer(no_args_is_help=True)

INPUT_HELP = "Text file, folder or glob (.txt, .jsonl, .json, .csv, .parquet, .arrow); repeatable."
IN, VOCAB, OUT = "Input", "Vocabulary", "Output"


def output_folder(output_dir: str, model_prefix: str | None) -> Path:
    """The seed's layout: `--output_dir tokenizers/ --model_prefix NAME` → tokenizers/NAME;
    `--output_dir tokenizers/test` alone → that folder."""
    if model_prefix is None:
        return Path(output_dir)
    from moai_llm.ownership import plain_name

    return Path(output_dir) / plain_name(model_prefix, "--model-prefix")


def _check_output(out: Path, inputs: list[str] | None = None) -> None:
    """Refuse to replace a folder that is not moai's tokenizer folder (e.g. `--output-dir
    tokenizers/` holding several tokenizers, a model folder), `/`, home, the current folder or
    one holding the inputs (moai_llm.ownership): training replaces the output folder whole."""
    from moai_llm.ownership import claim

    claim(out, "tokenizer", "--output-dir", [str(p) for p in inputs or [] if p])


def _sources(inputs, text_column, dataset, dataset_config, split, langs, max_samples_per_lang):
    from moai_llm.errors import MoaiInputError
    from moai_llm.tokenizer import text_streams

    found = []
    if inputs:
        found += text_streams.resolve_inputs(inputs, text_column)
    if dataset:
        found.append(text_streams.hub_source(dataset, dataset_config, split, text_column, max_samples_per_lang))
    if langs:
        found += text_streams.multilingual_sources(langs, max_samples_per_lang)
    if not found:
        raise MoaiInputError("no input given", hint="pass --input FILE, --dataset NAME or --multilingual ko en ...")
    return found


def _langs(multilingual: bool, words: list[str] | None) -> list[str]:
    from moai_llm.errors import MoaiInputError

    langs = [w for word in words or [] for w in word.replace(",", " ").split()]
    if langs and not multilingual:
        raise MoaiInputError(f"unexpected argument(s): {' '.join(langs)}", hint="languages go after --multilingual")
    if multilingual and not langs:
        from moai_llm import corpora

        langs = corpora.languages()
    return langs


@app.command(cls=MoaiCommand)
def train(
    langs: list[str] = typer.Argument(None, metavar="LANG", help="Languages for --multilingual (ko en ja zh).", show_default=False),
    inputs: list[str] = typer.Option(None, "--input", metavar="SRC", rich_help_panel=IN, help=INPUT_HELP),
    text_column: str = typer.Option(None, "--text-column", metavar="NAME", rich_help_panel=IN, show_default="detected", help="Column holding the text in JSON lines, CSV, Parquet or hub records."),
    dataset: str = typer.Option(None, "--dataset", metavar="NAME", rich_help_panel=IN, help="Hub dataset name (streamed)."),
    dataset_config: str = typer.Option(None, "--dataset-config", metavar="NAME", rich_help_panel=IN, help="Hub dataset config."),
    split: str = typer.Option("train", "--split", metavar="NAME", rich_help_panel=IN, help="Hub dataset split."),
    multilingual: bool = typer.Option(False, "--multilingual", rich_help_panel=IN, help="Train on languages (ko en ja zh): hub corpora when reachable, moai's embedded corpora otherwise."),
    max_samples_per_lang: int = typer.Option(None, "--max-samples-per-lang", metavar="N", rich_help_panel=IN, show_default="all", help="Documents per language (and per --dataset)."),
    vocab_size: int = typer.Option(32000, "--vocab-size", metavar="N", rich_help_panel=VOCAB, help="Tokens in the vocabulary, special tokens included."),
    min_frequency: int = typer.Option(2, "--min-frequency", metavar="N", rich_help_panel=VOCAB, help="A pair is merged only if seen this often."),
    output_dir: str = typer.Option("tokenizers/moai", "--output-dir", metavar="DIR", rich_help_panel=OUT, help="Output folder (or parent folder with --model-prefix)."),
    model_prefix: str = typer.Option(None, "--model-prefix", metavar="NAME", rich_help_panel=OUT, help="Name of the tokenizer folder inside --output-dir."),
    fast: bool = typer.Option(False, "--fast", rich_help_panel=VOCAB, help="BPE on a 20 MB sample of the input (measured cost: docs/tokenizer.md)."),
    turbo: bool = typer.Option(False, "--turbo", rich_help_panel=VOCAB, help="BPE on a 10 MB sample: trains faster than SentencePiece BPE on large inputs."),
    ultrafast: bool = typer.Option(False, "--ultrafast", rich_help_panel=VOCAB, help="Unigram on a 2 MB sample: fastest, least compression."),
    base_tokenizer: str = typer.Option(None, "--base-tokenizer", metavar="DIR", rich_help_panel=VOCAB, help="Extend this tokenizer instead of training from scratch (same as `moai tokenizer extend`)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow Python code named by a tokenizer folder (auto_map) to run (off: only tokenizer.json is read; only for folders you trust)."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUT, help="Print the result as JSON."),
) -> None:
    """Train a byte-level BPE tokenizer (ChatML special tokens, lossless round-trip).

    With --base-tokenizer (the seed's way to extend), the input is domain text and the base
    tokenizer is extended to --vocab-size, as `moai tokenizer extend` does."""
    with handle_errors():
        from moai_llm.errors import MoaiInputError
        from moai_llm.progress import is_quiet
        from moai_llm.tokenizer import train_tokenizer
        from moai_llm.tokenizer.train import MODES

        set_quiet(as_json)
        chosen = [name for name, on in (("fast", fast), ("turbo", turbo), ("ultrafast", ultrafast)) if on]
        if len(chosen) > 1:
            raise MoaiInputError(f"choose one speed mode, not {' and '.join('--' + c for c in chosen)}")
        mode = chosen[0] if chosen else "default"
        out = output_folder(output_dir, model_prefix)
        if base_tokenizer:
            from moai_llm.tokenizer.extend import check_output

            check_output(base_tokenizer, out)
        _check_output(out, [*(inputs or []), base_tokenizer])
        srcs = _sources(inputs, text_column, dataset, dataset_config, split,
                        _langs(multilingual, langs), max_samples_per_lang)
        if base_tokenizer:
            from moai_llm.tokenizer.extend import extend_tokenizer
            from moai_llm.tokenizer.train import sampled

            report = extend_tokenizer(base_tokenizer, sampled(srcs, mode), out, vocab_size,
                                      min_frequency=min_frequency, heldout=_default_heldout(),
                                      trust_remote_code=trust_remote_code)
            if as_json:
                print_json(report)
            else:
                _print_extend(report)
            return
        size = sum(s.size or 0 for s in srcs)
        start = time.perf_counter()
        train_tokenizer(srcs, out, vocab_size=vocab_size, min_frequency=min_frequency, mode=mode,
                        show_progress=not is_quiet() and sys.stderr.isatty())
        seconds = time.perf_counter() - start
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        result = {"output_dir": str(out), "mode": mode, "mode_summary": MODES[mode].summary,
                  "vocab_size": tok.get_vocab_size(with_added_tokens=True), "requested_vocab_size": vocab_size,
                  "sources": [s.name for s in srcs], "input_bytes": size or None, "seconds": round(seconds, 2)}
        if as_json:
            print_json(result)
            return
        console.print(f"[green]✓[/] tokenizer written to [bold]{out}[/] in {seconds:.1f} s "
                      f"({result['vocab_size']} tokens, mode {mode}: {MODES[mode].summary})")
        if result["vocab_size"] < vocab_size:
            console.print(f"[yellow]note:[/] only {result['vocab_size']} of {vocab_size} tokens: the input has "
                          f"too few pairs seen {min_frequency}+ times; give more text or lower --min-frequency")


@app.command(cls=MoaiCommand)
def extend(
    base_tokenizer: str = typer.Option(..., "--base-tokenizer", metavar="DIR", rich_help_panel=VOCAB, help="Byte-level BPE tokenizer folder or tokenizer.json to extend."),
    inputs: list[str] = typer.Option(None, "--input", metavar="SRC", rich_help_panel=IN, help=INPUT_HELP),
    text_column: str = typer.Option(None, "--text-column", metavar="NAME", rich_help_panel=IN, show_default="detected", help="Column holding the text."),
    dataset: str = typer.Option(None, "--dataset", metavar="NAME", rich_help_panel=IN, help="Hub dataset with the domain text (streamed)."),
    dataset_config: str = typer.Option(None, "--dataset-config", metavar="NAME", rich_help_panel=IN, help="Hub dataset config."),
    split: str = typer.Option("train", "--split", metavar="NAME", rich_help_panel=IN, help="Hub dataset split."),
    max_samples: int = typer.Option(None, "--max-samples", metavar="N", rich_help_panel=IN, show_default="all", help="Documents to read from --dataset."),
    vocab_size: int = typer.Option(..., "--vocab-size", metavar="N", rich_help_panel=VOCAB, help="Size of the extended vocabulary (larger than the base)."),
    min_frequency: int = typer.Option(2, "--min-frequency", metavar="N", rich_help_panel=VOCAB, help="A pair is merged only if seen this often."),
    heldout: list[str] = typer.Option(None, "--heldout", metavar="SRC", rich_help_panel=IN, show_default="moai's held-out ko and en corpora", help="Text of the base tokenizer's kind, to count the lines it still splits the same way."),
    output_dir: str = typer.Option("tokenizers/extended", "--output-dir", metavar="DIR", rich_help_panel=OUT, help="Output folder (or parent folder with --model-prefix)."),
    model_prefix: str = typer.Option(None, "--model-prefix", metavar="NAME", rich_help_panel=OUT, help="Name of the tokenizer folder inside --output-dir."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow Python code named by a tokenizer folder (auto_map) to run (off: only tokenizer.json is read; only for folders you trust)."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUT, help="Print the report as JSON."),
) -> None:
    """Add domain tokens to a byte-level BPE: old ids and merge ranks kept, new ones appended."""
    with handle_errors():
        from moai_llm.tokenizer.extend import check_output, extend_tokenizer
        from moai_llm.tokenizer.text_streams import iter_sources, resolve_inputs

        set_quiet(as_json)
        out = output_folder(output_dir, model_prefix)
        check_output(base_tokenizer, out)
        _check_output(out, [*(inputs or []), base_tokenizer, *(heldout or [])])
        srcs = _sources(inputs, text_column, dataset, dataset_config, split, [], max_samples)
        held = iter_sources(resolve_inputs(heldout)) if heldout else _default_heldout()
        report = extend_tokenizer(base_tokenizer, iter_sources(srcs), out, vocab_size,
                                  min_frequency=min_frequency, heldout=held, trust_remote_code=trust_remote_code)
        if as_json:
            print_json(report)
            return
        _print_extend(report)


def _default_heldout():
    from moai_llm import corpora

    for lang in ("ko", "en"):
        yield from corpora.iter_texts(lang, split="heldout")


def _print_extend(r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"extended {r['base']} → {r['output_dir']}", show_header=False)
    table.add_row("vocabulary", f"{r['base_vocab_size']} → {r['vocab_size']} (+{r['new_tokens']} tokens, {r['new_merges']} merges)")
    table.add_row("domain chars/token", f"{r['domain_chars_per_token_base']:.3f} → {r['domain_chars_per_token']:.3f} "
                  f"({r['domain_compression_gain']:+.1%})")
    if "heldout_unchanged" in r:
        table.add_row("held-out lines unchanged", f"{r['heldout_unchanged']:.1%} of {r['heldout_lines']}")
    table.add_row("new tokens (first 20)", " ".join(repr(t) for t in r["sample_new_tokens"]))
    console.print(table)
    if not r["reached"]:
        console.print(f"[yellow]note:[/] {r['vocab_size']} of {r['requested_vocab_size']} tokens: {r['reason']}")


@app.command(cls=MoaiCommand)
def compare(
    paths: list[str] = typer.Argument(None, metavar="TOKENIZER", show_default="every tokenizer under tokenizers/", help="Tokenizer folders."),
    inputs: list[str] = typer.Option(None, "--input", metavar="SRC", help="Your own held-out text instead of moai's corpora; repeatable."),
    text_column: str = typer.Option(None, "--text-column", metavar="NAME", show_default="detected", help="Column holding the text."),
    max_docs: int = typer.Option(2000, "--max-docs", metavar="N", help="Documents per text set."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow Python code named by a tokenizer folder (auto_map) to run (off: only tokenizer.json is read; only for folders you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Compression, byte fallback, round-trip and speed of tokenizers, per language.

    Columns: characters and UTF-8 bytes per token, tokens per whitespace word, share of tokens
    that are raw bytes / partial characters, share of texts that decode back exactly, encode
    speed in MB/s."""
    with handle_errors():
        import itertools

        from moai_llm.tokenizer.compare import (
            compare_tokenizers,
            default_text_sets,
            find_tokenizers,
        )
        from moai_llm.tokenizer.text_streams import resolve_inputs

        dirs = paths or find_tokenizers("tokenizers")
        if inputs:
            sets = {Path(s.name).name: list(itertools.islice(s.open(), max_docs))
                    for s in resolve_inputs(inputs, text_column)}
        else:
            sets = default_text_sets(max_docs)
        rows = compare_tokenizers(dirs, sets, trust_remote_code=trust_remote_code)
        if as_json:
            print_json(rows)
            return
        _print_compare(rows)


def _print_compare(rows: list[dict]) -> None:
    from rich.table import Table

    for name in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == name]
        table = Table(title=f"{name} ({mine[0]['vocab_size']} tokens)")
        for col in ("text", "chars/tok", "bytes/tok", "tok/word", "fallback", "round-trip", "MB/s"):
            table.add_column(col, justify="left" if col == "text" else "right", no_wrap=col == "text")
        for r in mine:
            table.add_row(r["set"], f"{r['chars_per_token']:.3f}", f"{r['bytes_per_token']:.3f}",
                          f"{r['tokens_per_word']:.3f}", f"{r['byte_fallback']:.2%}", f"{r['round_trip']:.1%}",
                          f"{r['encode_mb_s']:.1f}")
        console.print(table)
