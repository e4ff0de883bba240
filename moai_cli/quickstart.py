"""`moai quickstart`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built


def register(app: typer.Typer) -> None:
    app.command(name="quickstart")(quickstart)


def quickstart() -> None:
    """The whole path on this machine: tokenizer → data → pretrain → sft → chat."""
    not_built("quickstart", "issue 5")
