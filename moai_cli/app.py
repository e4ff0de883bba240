"""Root of the `moai` command: registers every command group.

Each group lives in its own module and keeps heavy imports (torch, transformers, datasets)
inside the command functions, so `moai --help` answers instantly.
"""

from __future__ import annotations

import os

import typer

from moai_cli import chat, data, doctor, eval, export, quickstart, tokenizer, train
from moai_llm.progress import set_quiet

app = typer.Typer(
    name="moai",
    help="From raw text to a chatting Qwen3-style model: tokenizer → data → pretrain → sft → chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
) -> None:
    if verbose:
        os.environ["MOAI_VERBOSE"] = "1"
    # Each invocation starts loud; a previous in-process `--json` command may have silenced output.
    set_quiet(False)


app.add_typer(tokenizer.app, name="tokenizer", help="Train, extend and compare tokenizers.")
app.add_typer(data.app, name="data", help="Prepare (tokenize + pack) and inspect training data.")
train.register(app)  # pretrain, sft, dpo
chat.register(app)
doctor.register(app)
eval.register(app)
export.register(app)
quickstart.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
