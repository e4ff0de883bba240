"""Progress without a terminal: plain lines every N units or S seconds, and one at the end."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from moai_llm.progress import LogProgress, progress_bar, set_quiet


def _lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line]


def test_a_line_every_n_units_and_at_the_end():
    out = io.StringIO()
    with LogProgress(unit="step", log_every=4, seconds=3600, out=Console(file=out, width=40)) as bar:
        task = bar.add_task("pretrain", total=10, info="")
        for step in range(1, 11):
            bar.update(task, completed=step, info=f"loss {10 - step}.0")
    lines = _lines(out)
    assert [line.split(" ·")[0] for line in lines] == ["pretrain 4/10 (40%)", "pretrain 8/10 (80%)",
                                                        "pretrain 10/10 (100%)"]
    assert lines[0].endswith("loss 6.0") and "eta " in lines[0] and "eta " not in lines[-1]
    assert all(len(line) > 40 for line in lines)  # never wrapped to the console width


def test_a_line_every_s_seconds_without_a_total():
    out = io.StringIO()
    with LogProgress(unit="tok", seconds=0, out=Console(file=out)) as bar:
        task = bar.add_task("preparing", total=None, info="")
        for _ in range(3):
            bar.advance(task, 1000)
    assert [line.split(" ·")[0] for line in _lines(out)] == ["preparing 1,000", "preparing 2,000",
                                                              "preparing 3,000"]


def test_without_a_terminal_progress_bar_gives_log_lines_and_quiet_gives_nothing():
    import sys

    if sys.stderr.isatty():
        pytest.skip("stderr is a terminal here (pytest -s)")
    assert isinstance(progress_bar(), LogProgress)
    set_quiet(True)
    try:
        assert not isinstance(progress_bar(), LogProgress)
    finally:
        set_quiet(False)
