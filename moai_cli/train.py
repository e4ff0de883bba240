"""`moai pretrain` and `moai sft`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built


def register(app: typer.Typer) -> None:
    app.command(name="pretrain")(pretrain)
    app.command(name="sft")(sft)


def pretrain() -> None:
    """Pretrain a model from scratch."""
    not_built("pretrain", "issue 5")


def sft() -> None:
    """Supervised fine-tuning of a model directory."""
    not_built("sft", "issue 5")
