"""One look for every progress bar in moai: description, bar, count, rate and ETA.

Library code shows progress through `progress_bar()`; the CLI silences it with `set_quiet()`
(`--json` output must stay machine-readable).

    >>> from moai_llm.progress import progress_bar, set_quiet
    >>> set_quiet(True)                      # what the CLI does for --json; nothing is drawn
    >>> with progress_bar() as bar:
    ...     task = bar.add_task("tokenizing", total=3, info="")   # every task sets `info`
    ...     for _ in range(3):
    ...         bar.advance(task)
    >>> bar.tasks[0].completed
    3
    >>> set_quiet(False)
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_quiet = False
# Progress and messages go to stderr so that stdout carries only results (answers, --json).
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """Disable (or re-enable) every progress bar and info message of the library."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


class RateColumn(TextColumn):
    """Items per second with a unit (e.g. `12.3k tok/s`)."""

    def __init__(self, unit: str = "it"):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if speed >= factor:
                return Text(f"{speed / factor:.1f}{suffix} {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:.1f} {self.unit}/s", style="progress.data.speed")


class InfoColumn(TextColumn):
    """Free text a task carries in its `info` field (loss, tokens/s); empty when it has none."""

    def __init__(self):
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        return Text(str(task.fields.get("info", "")))


def progress_bar(unit: str = "it", transient: bool = False) -> Progress:
    """A rich Progress with rate and ETA; disabled when quiet or when stderr is not a TTY-less pipe
    and the caller asked for quiet."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        InfoColumn(),
        console=console,
        disable=_quiet,
        transient=transient,
        refresh_per_second=4 if sys.stderr.isatty() else 0.5,
    )


def info(message: str) -> None:
    """A line of information for a person (stderr); silent when quiet."""
    if not _quiet:
        console.print(message, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """A warning for a person (stderr, yellow); printed even when quiet."""
    console.print(f"[yellow]warning:[/] {message}", soft_wrap=True, highlight=False)
