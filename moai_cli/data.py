"""`moai data prepare | inspect`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built

app = typer.Typer(no_args_is_help=True)


@app.command()
def prepare() -> None:
    """Tokenize and pack sources into a prepared dataset."""
    not_built("data prepare", "issue 4")


@app.command()
def inspect() -> None:
    """Inspect a prepared dataset."""
    not_built("data inspect", "issue 4")
