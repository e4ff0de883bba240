"""One console, error rendering, progress bars, --json output and option spellings for every
moai command.

Commands wrap their body in `with handle_errors():` so that bad input becomes one red line
(exit 2), a run failure one red line (exit 1), and a bug a traceback only with --verbose.

Every command is a `MoaiCommand`, so every `--help` has one style: each option once, under its
one visible spelling, with a `NAME` for its value and `[default: …]` (`help_style`). The other
spellings people type (the seed's `--output_dir`, `--per_device_train_batch_size`, `--bf16`,
short `-o`, ...) are translated to it before the command parses its arguments, from one table
(`ALIASES`), so every old spelling keeps working:

    >>> import typer
    >>> from typer.main import get_command
    >>> app = typer.Typer()
    >>> @app.command(cls=MoaiCommand)
    ... def run(output_dir: str = typer.Option("out", "--output-dir"),
    ...         precision: str = typer.Option("auto", "--precision")) -> None:
    ...     pass
    >>> translate_args(get_command(app), ["--output_dir", "x", "--bf16", "-o=y"])
    ['--output-dir', 'x', '--precision', 'bf16', '--output-dir=y']
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from moai_llm.errors import MoaiInputError, MoaiRunError
from moai_llm.progress import console as err_console
from moai_llm.progress import progress_bar, set_quiet  # noqa: F401  (re-exported for commands)

# stdout: results (tables, answers, JSON). stderr: progress, info, errors.
console = Console()

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def verbose() -> bool:
    return os.environ.get("MOAI_VERBOSE", "") not in ("", "0")


def fail(message: str, hint: str | None = None, code: int = EXIT_USAGE) -> NoReturn:
    """Print one red error line (and an optional hint) and exit with `code`. Both are plain
    text: brackets in them (`pip install -e '.[eval]'`, `[300, 32]`) are printed as written."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn moai's errors into exit codes: input errors 2, run errors 1, other errors 1."""
    try:
        yield
    except typer.Exit:
        raise
    except MoaiInputError as exc:
        fail(str(exc), exc.hint, EXIT_USAGE)
    except MoaiRunError as exc:
        fail(str(exc), exc.hint, EXIT_FAILURE)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except FileNotFoundError as exc:
        fail(f"{exc.filename or exc}: no such file or folder", "check the path", EXIT_USAGE)
    except PermissionError as exc:
        fail(f"{exc.filename or exc}: permission denied", "choose a folder you can write to", EXIT_USAGE)
    except OSError as exc:
        _fail_os(exc)
    except Exception as exc:  # a bug: short line, traceback with --verbose
        if verbose():
            err_console.print_exception()
        fail(f"{type(exc).__name__}: {exc}", "run with --verbose for the traceback", EXIT_FAILURE)


def _fail_os(exc: OSError) -> NoReturn:
    """A full or read-only disk is the user's to fix (exit 2); other OS errors are failures (1)."""
    import errno

    from moai_llm.resources import free_disk, human_bytes

    where = exc.filename or ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = f" ({human_bytes(free_disk(where))} free)" if where else ""
        fail(f"{where or 'output'}: no space left on the disk{free}", "free space, or write to another folder")
    if exc.errno == errno.EROFS:
        fail(f"{where or 'output'}: the file system is read-only", "choose a folder you can write to")
    if verbose():
        err_console.print_exception()
    fail(f"{type(exc).__name__}: {exc}", "run with --verbose for the traceback", EXIT_FAILURE)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (orjson, indented, numpy/dataclasses handled)."""
    import orjson

    sys.stdout.write(
        orjson.dumps(
            data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            default=str,
        ).decode()
        + "\n"
    )
    sys.stdout.flush()


def not_built(what: str, issue: str) -> NoReturn:
    """For commands that a later piece of work fills in: say so plainly, exit 2."""
    fail(f"`moai {what}` is not built yet ({issue})", code=EXIT_USAGE)


# Hidden spellings -> the one visible spelling (or spelling and value). Underscore spellings
# (`--output_dir`, `--tokenizer_path`) need no entry: they are read with dashes first. An alias
# applies only where the command has the option it names and not an option of its own spelling;
# a list names several, the first the command has wins (`-i` is `--input` where there is one).
ALIASES: dict[str, str | tuple[str, str] | list[str]] = {
    "-o": ["--output-dir", "--output"],
    "-i": ["--input", "--dataset"],
    "--input": "--dataset",
    "-m": "--model",
    "-q": "--question",
    "-p": "--prompt",
    "--tokenizer-path": "--tokenizer",
    "--model-path": "--pretrained-model",
    "--lr": "--learning-rate",
    "--lr-scheduler-type": "--lr-scheduler",
    "--warmup": "--warmup-steps",
    "--stable": "--stable-steps",
    "--decay": "--decay-steps",
    "--per-device-train-batch-size": "--batch-size",
    "--max-seq-length": "--seq-len",
    "--nproc-per-node": "--nproc",
    "--preset": "--hardware",
    "--bf16": ("--precision", "bf16"),
    "--fp32": ("--precision", "fp32"),
}


def translate_args(command: Any, args: list[str]) -> list[str]:
    """`args` with every alias spelling replaced by the command's visible one."""
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if not name.startswith("-") or name in known:
            out.append(arg)
            continue
        dashed = ("--" + name[2:].replace("_", "-")) if name.startswith("--") else name
        target = dashed if dashed in known else ALIASES.get(dashed)
        if isinstance(target, list):
            target = next((t for t in target if t in known), None)
        if isinstance(target, tuple) and target[0] in known and not eq:
            out.extend(target)
        elif isinstance(target, str) and target in known:
            out.append(target + eq + value)
        else:
            out.append(arg)
    return out


def one_line_paragraphs(text: str | None) -> str | None:
    r"""A docstring's paragraphs, each on one line, so that help wraps them at the terminal's width
    instead of breaking where the source did:

    >>> one_line_paragraphs("Compare tokenizers.\n\n    Columns: characters\n    per token.")
    'Compare tokenizers.\n\nColumns: characters per token.'
    """
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def help_style(params: list[Any]) -> None:
    """Every value gets a NAME in help: the declared metavar, else (for a value option) the
    parameter's name in capitals; a flag shows none (Typer would print `<bool>`, `<str>`). An
    argument's NAME is its type column too. The `--no-X` of an `--X/--no-X` flag is not listed
    (it would double the option column; the help text names it)."""
    for param in params:
        param.secondary_opts = []
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None  # its NAME already stands in the first column
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.param_type_name == "argument":
            param.metavar = param.name.upper()
        else:
            param.metavar = "VALUE"


class MoaiCommand(TyperCommand):
    """A Typer command in moai's help style that accepts the hidden spellings of `ALIASES`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = one_line_paragraphs(self.help)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, translate_args(self, args))

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        help_style(self.get_params(ctx))
        super().format_help(ctx, formatter)


def given_on_command_line(ctx: typer.Context, names: list[str]) -> set[str]:
    """Which of the command's parameters `names` were typed (not left at their default)."""
    return {n for n in names if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"}
