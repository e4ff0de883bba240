"""The `moai` command itself: every group is listed, --help stays light and reads at 80
columns (one spelling per option, defaults shown, options in panels).

(Instant help follows from importing no torch/transformers/datasets/tokenizers; timing
itself is not asserted here: on a loaded 2-core CI machine wall time swings 10x.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GROUPS = ["tokenizer", "data", "pretrain", "sft", "chat", "doctor", "quickstart"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moai_cli", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command_group():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    for group in GROUPS:
        assert group in out.stdout, f"{group} missing from moai --help"


def test_tokenizer_and_data_groups_list_their_subcommands():
    tok = _run("tokenizer", "--help").stdout
    for sub in ("train", "extend", "compare"):
        assert sub in tok
    data = _run("data", "--help").stdout
    for sub in ("prepare", "inspect"):
        assert sub in data


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from moai_cli.app import app\n"
        "for args in (['--help'], ['tokenizer', '--help'], ['data', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'tokenizers') if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _help(command: str, columns: int = 80) -> str:
    import os

    env = dict(os.environ, COLUMNS=str(columns), TERM="dumb")
    out = subprocess.run([sys.executable, "-m", "moai_cli", command, "--help"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _click_command(name: str):
    from typer.main import get_command

    from moai_cli.app import app

    return get_command(app).commands[name]


@pytest.mark.parametrize("command", ["pretrain", "sft", "doctor", "quickstart"])
def test_help_reads_at_80_columns_one_spelling_per_option(command):
    import re

    from moai_cli.ui import ALIASES

    text = _help(command)
    assert max(len(line) for line in text.splitlines()) <= 80
    options = [p for p in _click_command(command).params
               if not p.hidden and p.param_type_name == "option" and p.name != "help"]
    assert len(options) >= 5
    for param in options:
        assert len(param.opts) == 1 and not param.secondary_opts, param.opts  # one spelling
        flag = param.opts[0]
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{flag} cut off or missing"
    assert "…" not in text
    assert not re.search(r"--\w+_\w+", text)  # no seed spellings shown
    shown = [a for a in ALIASES if re.search(rf"│ {re.escape(a)}(?![\w-])", text)]
    assert shown == []  # aliases are accepted but hidden


def test_help_panels_and_defaults_of_pretrain():
    text = _help("pretrain", columns=120)
    for panel in ("Model", "Data", "Optimisation", "Schedule", "Checkpoints", "Distributed", "Output"):
        assert f"─ {panel} " in text, panel
    assert "[default: 0.0003]" in text and "[default: 2048]" in text and "[default: (the plan's)]" in text
    assert "[default: 5e-05]" in _help("sft", columns=120)  # the mode's own default


def test_pretrain_and_sft_declare_their_options_once():
    from moai_cli.train import OPTIONS

    pretrain = {p.name for p in _click_command("pretrain").params}
    sft = {p.name for p in _click_command("sft").params}
    declared = {o.name for o in OPTIONS}
    assert (pretrain | sft) - {"extra", "ctx"} <= declared
    assert pretrain & sft >= {"learning_rate", "seq_len", "global_batch", "resume", "nproc"}
