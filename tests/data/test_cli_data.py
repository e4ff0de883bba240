"""`moai data prepare | inspect` as a user runs them: results on stdout, bad input exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moai_cli.app import app


def moai(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "moai_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_prepare_then_inspect_with_seed_aliases_and_json(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"content": f"문서 number {i}"} for i in range(50)])
    runner = CliRunner()
    args = ["data", "prepare", "--input", str(path), "--tokenizer_path", str(tokenizer_dir), "--max_seq_length", "64",
            "--output_dir", str(tmp_path / "out"), "--packing", "hierarchical", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["seq_len"] == 64 and manifest["num_documents"] == 50 and manifest["packing"] == "hierarchical"
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["cache_hit"] is True
    shown = runner.invoke(app, ["data", "inspect", str(tmp_path / "out"), "--show", "1"])
    assert shown.exit_code == 0 and "packing efficiency" in shown.stdout and "문서 number" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["data", "inspect", str(tmp_path / "out"), "--show", "1", "--json"]).stdout)
    assert as_json["num_rows"] == manifest["num_rows"] and as_json["rows"][0][0]["loss"] is True


@pytest.mark.parametrize(("content", "extra", "expected"), [
    (b'{"text": "ok"}\n{"text": \n', [], "bad.jsonl:2: malformed JSON"),
    (b'{"text": "caf\xe9"}\n', [], "bad.jsonl:1: bytes that are not UTF-8"),
    (b"", [], "bad.jsonl: the file is empty"),
    (b'{"review": "x", "stars": 5}\n', [], "columns found: review, stars"),
    (b'{"review": "x"}\n', ["--text-column", "body"], "no column 'body'; columns found: review"),
    (b'{"text": "   "}\n', [], "no usable documents"),
    (b'{"text": "ok"}\n', ["--seq-len", "2"], "--seq-len 2"),
    (b'{"text": "ok"}\n', ["--max-positions", "32"], "--seq-len 64: a row must hold at least 8 tokens and at most the model's 32"),
    (b'{"text": "ok"}\n', ["--mode", "sft"], "no SFT schema recognised; columns found: text"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, tokenizer_dir, content, extra, expected):
    (tmp_path / "bad.jsonl").write_bytes(content)
    result = moai("data", "prepare", "--input", "bad.jsonl", "--tokenizer", tokenizer_dir, "--seq-len", "64",
                  "--output-dir", "out", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.building-*"))


def test_skip_bad_rows_counts_them(tmp_path, tokenizer_dir):
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "good one"}\nnot json\n{"text": "good two"}\n')
    result = moai("data", "prepare", "-i", "d.jsonl", "--tokenizer", tokenizer_dir, "--seq-len", "64",
                  "-o", "out", "--skip-bad-rows", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["skipped_rows"] == 1 and manifest["num_documents"] == 2 and "d.jsonl:2" in manifest["first_skipped_row"]


@pytest.mark.parametrize("mode", ["pretrain", "sft"])
def test_a_tokenizer_folder_naming_code_is_read_without_running_it(tmp_path, tokenizer_dir, mode):
    import shutil

    from faults import make_hostile

    hostile = make_hostile(shutil.copytree(tokenizer_dir, tmp_path / "hostile"))
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "4", "text": "hello"}) + "\n")
    done = subprocess.run(f"echo y | {sys.executable} -m moai_cli data prepare -i d.jsonl --tokenizer hostile "
                          f"--seq-len 64 -o out --mode {mode}", shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "hostile: tokenizer_config.json names Python code (evil.EvilTokenizer" in said and "does not run it" in said
    assert not (hostile / "MARKER").exists() and (tmp_path / "out" / "manifest.json").is_file()
