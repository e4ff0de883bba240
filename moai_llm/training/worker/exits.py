"""How a worker process ends, and what its launcher reads from that: the worker side of launch.

- `FirstStepOOM`: out of memory at the first optimizer step. In one process the launcher
  catches it; a torchrun worker calls `exit_first_step_oom()`, which leaves a marker file (named
  by MOAI_OOM_MARKER) and exits with 75, because torchrun itself exits 1 whatever its children
  did. The launcher then retries with half the micro batch (launcher/launch.py).
- `record_exit_code(code)`: the same for the other exit codes (2 bad input, 1 failure).
- `die_with_parent()`: the process is SIGKILLed when its parent dies (Linux), so a killed
  launcher takes torchrun and its workers with it and none writes into a folder whose lock is gone.

    >>> EXIT_FIRST_STEP_OOM, issubclass(FirstStepOOM, RuntimeError)
    (75, True)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_FIRST_STEP_OOM = 75
OOM_MARKER_ENV = "MOAI_OOM_MARKER"
EXIT_CODE_ENV = "MOAI_WORKER_EXIT_CODE"


class FirstStepOOM(RuntimeError):
    """Out of memory during the first optimizer step: the plan's micro batch is too large."""


def exit_first_step_oom(message: str = "") -> None:
    """For torchrun workers: record a first-step OOM for the launcher and exit with 75."""
    marker = os.environ.get(OOM_MARKER_ENV)
    if marker:
        Path(marker).write_text(message or "first-step OOM\n")
    sys.exit(EXIT_FIRST_STEP_OOM)


def record_exit_code(code: int) -> None:
    """For torchrun workers: leave the exit code for the launcher (torchrun itself exits 1)."""
    path = os.environ.get(EXIT_CODE_ENV)
    if path and code:
        Path(path).write_text(str(code))


def parent_death_signal() -> Callable[[], Any] | None:
    """For a child process: a call that asks to be SIGKILLed when this process dies (Linux), so
    that torchrun and its workers never outlive a killed launcher. Resolved before the fork:
    the child only makes one system call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def die_with_parent() -> None:
    """Ask to be SIGKILLed when the parent process (torchrun) dies (Linux; a no-op elsewhere)."""
    set_signal = parent_death_signal()
    if set_signal is not None:
        set_signal()
