"""`moai chat`: talk to a model folder, a run's output folder or any Qwen3 directory.

Interactive on a terminal (answers stream as they are generated, a dim stats line after
each, slash commands, Ctrl-C stops an answer, Ctrl-D leaves); one answer and exit with
`--prompt` or text on stdin (`--json` adds the statistics). The work happens in
`moai_llm.inference`; this module parses flags and draws the screen.

    moai chat outputs/sft
    moai chat outputs/sft --prompt "금리가 오르면?" --temperature 0 --json
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Optional

import typer

from moai_cli.ui import MoaiCommand, console, fail, handle_errors, print_json, set_quiet
from moai_llm.defaults import SAMPLING as DEFAULT
from moai_llm.errors import MoaiInputError


def register(app: typer.Typer) -> None:
    app.command(name="chat", cls=MoaiCommand)(chat)


SAMPLING, MODEL, TALK = "Sampling", "Model and device", "Conversation"
GENERATION = "generation_config, else "  # then moai_llm/defaults.py: DEFAULT


def chat(
    model_dir: Optional[str] = typer.Argument(None, metavar="MODEL_DIR", help="Model folder, run output folder, Qwen3 folder or hub name."),
    model_path: Optional[str] = typer.Option(None, "--model-path", hidden=True, help="The seed's spelling of MODEL_DIR."),
    prompt: Optional[str] = typer.Option(None, "--prompt", metavar="TEXT", rich_help_panel=TALK, help="Answer this one message and exit."),
    system: Optional[str] = typer.Option(None, "--system", metavar="TEXT", rich_help_panel=TALK, help="System prompt."),
    json_out: bool = typer.Option(False, "--json", rich_help_panel=TALK, help="With --prompt or stdin: print each answer and its statistics as JSON."),
    temperature: Optional[float] = typer.Option(None, "--temperature", metavar="T", rich_help_panel=SAMPLING, show_default=GENERATION + str(DEFAULT["temperature"]), help="0 = greedy."),
    top_p: Optional[float] = typer.Option(None, "--top-p", metavar="P", rich_help_panel=SAMPLING, show_default=GENERATION + str(DEFAULT["top_p"]), help="Nucleus sampling."),
    top_k: Optional[int] = typer.Option(None, "--top-k", metavar="K", rich_help_panel=SAMPLING, show_default=GENERATION + "50", help="Keep the k most likely tokens; 0 = off."),
    repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", metavar="R", rich_help_panel=SAMPLING, show_default=GENERATION + str(DEFAULT["repetition_penalty"]), help="1 = off."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", metavar="N", rich_help_panel=SAMPLING, show_default=GENERATION + str(DEFAULT["max_new_tokens"]), help="Longest answer in tokens."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", rich_help_panel=SAMPLING, help="Make sampling reproducible."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", metavar="DIR", rich_help_panel=MODEL, help="Tokenizer folder when the model folder has none."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", rich_help_panel=MODEL, show_default="GPU when present", help="cuda, cuda:1 or cpu."),
    dtype: Optional[str] = typer.Option(None, "--dtype", metavar="DTYPE", rich_help_panel=MODEL, show_default="bf16 on GPU, fp32 on CPU", help="bfloat16, float16 or float32."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", rich_help_panel=MODEL, show_default="torch's choice", help="CPU threads for torch (on a busy machine 1 can be faster)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", rich_help_panel=MODEL, help="Allow code shipped with the model to run (only for folders you trust)."),
) -> None:
    """Chat with a model: streaming answers, multi-turn history, /help for commands."""
    with handle_errors(), _quiet_if(json_out):
        path = model_dir or model_path
        if not path:
            fail("no model given", "moai chat MODEL_DIR (a final_model/, a run folder or a Qwen3 directory)")
        if model_dir and model_path and model_dir != model_path:
            fail(f"two models given ({model_dir} and --model-path {model_path})", "pass one")
        from moai_llm.inference.loading import check_model_path

        check_model_path(path)  # a missing folder is named before stdin is read
        messages = [prompt] if prompt is not None else None
        if messages is None and not sys.stdin.isatty():
            messages = piped_messages(sys.stdin.read())
            if not messages:
                fail("stdin is empty", "pipe a message in, or pass --prompt")
        if json_out and messages is None:
            fail("--json needs a message", "pass --prompt TEXT or pipe text on stdin")
        _check_ranges(temperature, top_p, top_k, repetition_penalty, max_new_tokens)

        # Decoding runs one token at a time: many tiny parallel regions. OpenMP's default
        # spin-waiting makes them crawl when other processes hold the cores (measured in
        # benchmarks/results/chat.md: 33M model on a busy 2-core CPU, 1-2 tok/s spinning vs 20
        # sleeping). Read when torch loads, which this command does first, just below.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if threads is not None:
            if threads < 1:
                fail("--threads must be ≥ 1")
            import torch

            torch.set_num_threads(threads)
        from moai_llm.inference import ChatSession, SamplingParams, load_for_chat
        from moai_llm.progress import info as say
        from moai_llm.progress import warn

        model, tok, info = load_for_chat(path, device=device, dtype=dtype,
                                         trust_remote_code=trust_remote_code, tokenizer_path=tokenizer)
        given = {"temperature": temperature, "top_p": top_p, "top_k": top_k,
                 "repetition_penalty": repetition_penalty, "max_new_tokens": max_new_tokens}
        settings = {**info["generation"], **{k: v for k, v in given.items() if v is not None}}
        params = SamplingParams(**settings, seed=seed)
        session = ChatSession(model, tok, info, system=system, params=params, notify=warn)
        if messages is not None:
            _answer_lines(session, messages, info, json_out, commands=prompt is None)
            return
        say(f"[bold]moai chat[/] · {info['path']} · {info['parameters']:,} parameters · "
            f"{info['device']} {info['dtype']} · /help for commands, Ctrl-D to leave")
        _interactive(session)


@contextlib.contextmanager
def _quiet_if(quiet: bool) -> Iterator[None]:
    """Silence progress/info for --json (stdout must stay pure JSON), then restore the previous
    setting: the flag is process-wide, and tests call several commands in one process."""
    from moai_llm.progress import is_quiet

    before = is_quiet()
    set_quiet(before or quiet)
    try:
        yield
    finally:
        set_quiet(before)


def _check_ranges(temperature, top_p, top_k, repetition_penalty, max_new_tokens) -> None:
    import math

    for flag, value in (("--temperature", temperature), ("--top-p", top_p),
                        ("--repetition-penalty", repetition_penalty)):
        if value is not None and not math.isfinite(value):
            fail(f"{flag} must be a finite number, got {value}")
    checks = [
        (temperature is not None and temperature < 0, "--temperature must be ≥ 0"),
        (top_p is not None and not 0 < top_p <= 1, "--top-p must be in (0, 1]"),
        (top_k is not None and top_k < 0, "--top-k must be ≥ 0"),
        (repetition_penalty is not None and repetition_penalty <= 0, "--repetition-penalty must be > 0"),
        (max_new_tokens is not None and max_new_tokens < 1, "--max-new-tokens must be ≥ 1"),
    ]
    for bad, message in checks:
        if bad:
            fail(message)


def piped_messages(text: str) -> list[str]:
    r"""Text on stdin as the lines a person would type at the prompt, one message each, up to a
    line that leaves (`/exit`, `/quit`, `exit`, `quit`); blank lines are skipped:

    >>> piped_messages("What is an ETF?\n\n/reset\nAnd a bond?\n/exit\nnot read\n")
    ['What is an ETF?', '/reset', 'And a bond?']
    """
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.lower() in ("exit", "quit", "q", "/exit", "/quit"):
            break
        if line:
            lines.append(line)
    return lines


def _answer_lines(session: Any, lines: list[str], info: dict, json_out: bool, commands: bool) -> None:
    """Each message answered in turn, in one conversation; with `commands` (stdin) slash commands
    run as at the prompt, their replies on stderr so that stdout holds the answers only."""
    from moai_cli.ui import err_console

    for line in lines:
        if commands and line.startswith("/"):
            result = session.handle_command(line)
            if result.message:
                err_console.print(result.message, style="red" if result.error else "dim",
                                  highlight=False, markup=False)
            continue
        _answer_once(session, line, info, json_out)


def _answer_once(session: Any, text: str, info: dict, json_out: bool) -> None:
    """One answer: streamed to stdout (stats on stderr), or one JSON object."""
    if json_out:
        answer = "".join(session.ask(text))
        print_json({"answer": answer, **session.last_stats.to_dict(),
                    "model": info["path"], "device": info["device"], "dtype": info["dtype"],
                    "params": session.params.to_dict()})
        return
    shown = terminal_text if sys.stdout.isatty() else str  # scripts get the raw answer
    for piece in session.ask(text):
        sys.stdout.write(shown(piece))
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    from moai_llm.progress import info as say

    say(f"[dim]{session.last_stats.line()}[/]")


def _interactive(session: Any) -> None:
    """The read-answer loop: Ctrl-C stops an answer (or clears the line), Ctrl-D leaves."""
    with contextlib.suppress(ImportError):  # not on Windows
        import readline  # noqa: F401  (line editing and history for input())
    color = sys.stdout.isatty()
    # \001 \002 tell readline the colour codes take no columns (so line editing stays right).
    you = "\001\033[1;36m\002you>\001\033[0m\002 " if color else "you> "
    while True:
        try:
            line = input(you)
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:  # at the prompt: drop the line, like a shell
            console.print("^C", style="dim")
            continue
        line = line.strip()
        if not line:
            continue
        if line.lower() in ("exit", "quit", "q"):  # the seed's chat.py words for leaving
            return
        if line.startswith("/"):
            result = session.handle_command(line)
            if result.exit:
                return
            if result.message:
                console.print(result.message, style="red" if result.error else "dim",
                              highlight=False, markup=False)
            continue
        _stream_answer(session, line)


# C0 control characters other than tab and newline (and DEL): a model's output must not be
# able to move the cursor, clear the screen or ring the bell of the terminal it is shown on.
_CONTROL = {c: None for c in [*range(0, 9), *range(11, 32), 127]}


def terminal_text(piece: str) -> str:
    """`piece` without terminal control characters (what the interactive screen shows)."""
    return piece.translate(_CONTROL)


def _stream_answer(session: Any, line: str) -> None:
    answer = session.ask(line)
    stopped = False
    try:
        for piece in answer:
            sys.stdout.write(terminal_text(piece))
            sys.stdout.flush()
    except KeyboardInterrupt:
        stopped = True
    except MoaiInputError as exc:  # the message alone is longer than the context
        console.print(str(exc), style="red", highlight=False, markup=False)
        return
    finally:
        answer.close()
    if stopped:
        session.last_stats.stop_reason = "interrupted"
    sys.stdout.write("\n")
    sys.stdout.flush()
    suffix = " · stopped" if stopped else ""
    console.print(f"{session.last_stats.line()}{suffix}", style="dim", highlight=False, markup=False)
