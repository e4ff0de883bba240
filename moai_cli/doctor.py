"""`moai doctor`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built


def register(app: typer.Typer) -> None:
    app.command(name="doctor")(doctor)


def doctor() -> None:
    """Check the hardware and software, and plan a run."""
    not_built("doctor", "issue 6")
