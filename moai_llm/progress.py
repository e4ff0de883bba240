"""One look for every progress report in moai: a bar on a terminal, log lines elsewhere.

Library code shows progress through `progress_bar()`; the CLI silences it with `set_quiet()`
(`--json` output must stay machine-readable). On a terminal it is a rich bar with rate and
ETA. When stderr is not a terminal (nohup, SLURM logs, CI) a bar would print nothing until
it ends, so progress is a plain line instead, every `log_every` units or `LOG_SECONDS`
seconds, whichever comes first, and one at the end:

    pretrain 120/1000 (12%) · 3.2 step/s · 37s elapsed · eta 4m35s · loss 3.2145

    >>> from moai_llm.progress import progress_bar, set_quiet
    >>> set_quiet(True)                      # what the CLI does for --json; nothing is shown
    >>> with progress_bar() as bar:
    ...     task = bar.add_task("tokenizing", total=3, info="")   # every task sets `info`
    ...     for _ in range(3):
    ...         bar.advance(task)
    >>> bar.tasks[0].completed
    3
    >>> set_quiet(False)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

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

LOG_SECONDS = 30.0  # without a terminal: a progress line at least this often

_quiet = False
# Progress and messages go to stderr so that stdout carries only results (answers, --json).
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """Disable (or re-enable) every progress report and info message of the library."""
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

        return Text(_rate(task.finished_speed or task.speed, self.unit), style="progress.data.speed")


class InfoColumn(TextColumn):
    """Free text a task carries in its `info` field (loss, tokens/s); empty when it has none."""

    def __init__(self):
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        return Text(str(task.fields.get("info", "")))


def _rate(speed: float | None, unit: str) -> str:
    if speed is None:
        return f"- {unit}/s"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if speed >= factor:
            return f"{speed / factor:.1f}{suffix} {unit}/s"
    return f"{speed:.1f} {unit}/s"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class LogTask:
    """The part of rich's Task that callers read (`completed`, `total`, `fields`)."""

    description: str
    total: float | None
    completed: float = 0
    fields: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    logged_at: float = field(default_factory=time.monotonic)
    logged_units: float = 0


class LogProgress:
    """rich Progress's interface, reporting as plain lines (for logs without a terminal)."""

    def __init__(self, unit: str = "it", log_every: int | None = None,
                 seconds: float | None = None, out: Console | None = None):
        self.unit, self.log_every = unit, log_every
        self.seconds = LOG_SECONDS if seconds is None else seconds
        self.out = out or console
        self.tasks: list[LogTask] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for task in self.tasks:
            if task.completed != task.logged_units:
                self._line(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> int:
        self.tasks.append(LogTask(description, total, completed, dict(fields), logged_units=completed))
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        task.fields.update(fields)
        now = time.monotonic()
        units_due = self.log_every and task.completed - task.logged_units >= self.log_every
        if units_due or now - task.logged_at >= self.seconds:
            self._line(task)

    def _line(self, task: LogTask) -> None:
        now = time.monotonic()
        elapsed = now - task.started
        rate = (task.completed - task.logged_units) / max(now - task.logged_at, 1e-9)
        parts = [f"{task.description} {task.completed:,.0f}"
                 + (f"/{task.total:,.0f} ({task.completed / task.total:.0%})" if task.total else ""),
                 _rate(rate, self.unit), f"{_duration(elapsed)} elapsed"]
        if task.total and rate > 0 and task.completed < task.total:
            parts.append(f"eta {_duration((task.total - task.completed) / rate)}")
        if task.fields.get("info"):
            parts.append(str(task.fields["info"]))
        self.out.print(" · ".join(parts), soft_wrap=True, highlight=False, markup=False)
        task.logged_at, task.logged_units = now, task.completed


def progress_bar(unit: str = "it", transient: bool = False,
                 log_every: int | None = None) -> Progress | LogProgress:
    """A rich bar with rate and ETA on a terminal; `LogProgress` lines otherwise (every
    `log_every` units or LOG_SECONDS seconds). Nothing when quiet."""
    if not _quiet and not console.is_terminal:
        return LogProgress(unit, log_every)
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
    )


def info(message: str) -> None:
    """A line of information for a person (stderr); silent when quiet."""
    if not _quiet:
        console.print(message, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """A warning for a person (stderr, yellow); printed even when quiet. `message` is plain text
    (brackets in it are printed as written)."""
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, highlight=False)
