"""The `moai` command itself: every group is listed and --help stays light and instant."""

from __future__ import annotations

import json
import subprocess
import sys
import time

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


def test_help_answers_well_under_a_second():
    _run("--help")  # warm the filesystem cache
    best = min(_timed(("--help",)) for _ in range(3))
    assert best < 1.0, f"moai --help took {best:.2f} s"


def _timed(args: tuple[str, ...]) -> float:
    start = time.perf_counter()
    assert _run(*args).returncode == 0
    return time.perf_counter() - start
