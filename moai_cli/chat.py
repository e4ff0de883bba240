"""`moai chat`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built


def register(app: typer.Typer) -> None:
    app.command(name="chat")(chat)


def chat() -> None:
    """Chat with a model directory."""
    not_built("chat", "issue 7")
