"""The `moai` command itself: every group is listed and --help stays light.

(Instant help follows from importing no torch/transformers/datasets/tokenizers; timing
itself is not asserted here: on a loaded 2-core CI machine wall time swings 10x.)
"""

from __future__ import annotations

import json
import subprocess
import sys

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
