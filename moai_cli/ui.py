"""One console, error rendering, progress bars and --json output for every moai command.

Commands wrap their body in `with handle_errors():` so that bad input becomes one red line
(exit 2), a run failure one red line (exit 1), and a bug a traceback only with --verbose.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console

from moai_llm.errors import MoaiInputError, MoaiRunError
from moai_llm.progress import console as err_console
from moai_llm.progress import progress_bar, set_quiet  # noqa: F401  (re-exported for commands)

# stdout: results (tables, answers, JSON). stderr: progress, info, errors.
console = Console()

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def verbose() -> bool:
    return os.environ.get("MOAI_VERBOSE", "") not in ("", "0")


def fail(message: str, hint: str | None = None, code: int = EXIT_USAGE) -> NoReturn:
    """Print one red error line (and an optional hint) and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}", highlight=False, soft_wrap=True)
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
