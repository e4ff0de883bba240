"""`moai tokenizer train | extend | compare`."""

from __future__ import annotations

import typer

from moai_cli.ui import not_built

app = typer.Typer(no_args_is_help=True)


@app.command()
def train() -> None:
    """Train a byte-level BPE tokenizer."""
    not_built("tokenizer train", "issue 3")


@app.command()
def extend() -> None:
    """Extend a tokenizer with domain vocabulary."""
    not_built("tokenizer extend", "issue 3")


@app.command()
def compare() -> None:
    """Compare tokenizers."""
    not_built("tokenizer compare", "issue 3")
