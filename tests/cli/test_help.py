"""Every command's `--help` in one style, readable at 80 columns: each option once under its one
spelling (aliases work but are not listed), whole names (never cut), descriptions that wrap
(never end in an ellipsis), a NAME for every value and defaults as `[default: …]`, and the model
presets read from the presets folder."""

from __future__ import annotations

import re

import pytest
from rich.cells import cell_len
from typer.main import get_command
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.paths import PRESETS_DIR

ROOT = get_command(app)


def _commands(group=ROOT, path: tuple[str, ...] = ()) -> list:
    found = [(path, group)]
    for name, sub in getattr(group, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands()
LEAVES = [(path, cmd) for path, cmd in COMMANDS if not hasattr(cmd, "commands")]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def _visible_options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]


def test_every_command_is_listed():
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"chat", "eval", "pretrain", "sft", "doctor", "quickstart", "data prepare", "data inspect",
            "tokenizer train", "tokenizer extend", "tokenizer compare"} <= names


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "moai")
def test_help_fits_80_columns_without_cut_words(path):
    text = _help(path)
    assert "…" not in text, f"a cut word in `moai {' '.join(path)} --help`"
    wide = [line for line in text.splitlines() if cell_len(line) > 80]
    assert not wide, wide[:3]


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(path) for path, _ in LEAVES])
def test_each_option_once_under_its_one_spelling(path, cmd):
    text = _help(path)
    for opt in _visible_options(cmd):
        name = next(o for o in opt.opts if o.startswith("--"))
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} cut or missing"
        for alias in [o for o in opt.opts if o != name and o.startswith("--")]:
            assert alias not in text, f"{alias} (an alias of {name}) is listed"
    assert not re.search(r"--[a-z0-9-]+,-", text), "several spellings listed side by side"
    assert not re.search(r"--[a-z0-9]+_[a-z_]", text), "an underscore spelling is listed"
    # NAME [default: …]: no Typer type placeholders, defaults in one form
    assert not re.search(r"<(str|int|float|bool|path|list\[\w+\])>", text), "a <type> placeholder"
    for opt in _visible_options(cmd):
        assert not re.search(r"\bdefault\b[: ]|\bDefault\b", opt.help or ""), \
            f"{opt.opts[0]}: its default belongs in [default: …], not in the description"


def test_the_underscore_and_short_spellings_still_work():
    from moai_cli.ui import translate_args

    chat = ROOT.commands["chat"]
    assert translate_args(chat, ["--max_new_tokens", "3", "-p", "hi", "--tokenizer_path", "t"]) == \
        ["--max-new-tokens", "3", "--prompt", "hi", "--tokenizer", "t"]
    prepare = ROOT.commands["data"].commands["prepare"]
    assert translate_args(prepare, ["-i", "a.jsonl", "--max_seq_length", "64", "-o", "out"]) == \
        ["--input", "a.jsonl", "--seq-len", "64", "--output-dir", "out"]
    assert translate_args(ROOT.commands["eval"], ["-o", "out"]) == ["--output", "out"]


@pytest.mark.parametrize("path", [("pretrain",), ("doctor",)])
def test_model_presets_are_read_from_the_presets_folder(path):
    text = " ".join(_help(path).split())
    presets = sorted(p.stem for p in (PRESETS_DIR / "models").glob("*.yaml"))
    assert any(name.startswith("qwen3-") for name in presets)
    for name in presets:
        assert re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text), f"preset {name} not in --model's help"
