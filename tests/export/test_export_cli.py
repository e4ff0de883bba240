"""`moai export` through the CLI: what it prints, what it replaces, what it refuses to touch.

Bad input (exit 2, one line, nothing written) is in tests/test_bad_input_table.py.
"""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.export.pretokenizer import heldout_documents


def run(*args: str):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_ollama_export_prints_the_create_line_and_writes_only_its_folder(moai_model, tmp_path):
    result = run(moai_model, "--format", "ollama", "--quant", "q8_0", "-o", tmp_path / "mine")
    assert result.exit_code == 0, result.output
    assert f"ollama create m -f {tmp_path / 'mine' / 'Modelfile'}" in " ".join(result.output.split())
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".moai-output.json", "Modelfile", "m-q8_0.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary, no lock left


def test_its_own_export_is_replaced_and_leftovers_of_a_killed_one_removed(moai_model, tmp_path):
    out = tmp_path / "m.gguf"
    (tmp_path / ".m.gguf.tmp-deadbeef").write_bytes(b"half a GGUF")  # what a kill leaves behind
    first = run(moai_model, "--quant", "f32", "-o", out, "--json")
    assert first.exit_code == 0, first.output
    size_f32 = json.loads(first.output)["bytes"]
    second = run(moai_model, "--quant", "f16", "-o", out, "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.output)["bytes"] == out.stat().st_size < size_f32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_a_moai_ollama_folder_is_replaced_but_not_a_users_folder_or_the_model(moai_model, tmp_path):
    out = tmp_path / "o"
    assert run(moai_model, "--format", "ollama", "-o", out).exit_code == 0
    assert run(moai_model, "--format", "ollama", "--quant", "q8_0", "-o", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [".moai-output.json", "Modelfile", "m-q8_0.gguf"]
    (out / "notes.txt").write_text("mine")
    refused = run(moai_model, "--format", "ollama", "-o", out)
    assert refused.exit_code == 2 and "also holds files moai did not make" in " ".join(refused.output.split())
    assert (out / "notes.txt").read_text() == "mine"
    inside = run(moai_model, "--format", "ollama", "-o", moai_model / "ollama")
    assert inside.exit_code == 2 and "is inside the input folder" in " ".join(inside.output.split())


def test_allow_tokenizer_mismatch_measures_the_share_of_documents(moai_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(moai_model, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+"
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    assert run(folder, "-o", tmp_path / "x.gguf").exit_code == 2
    result = run(folder, "-o", tmp_path / "x.gguf", "--allow-tokenizer-mismatch", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index('{\n  "output"'):])
    differ, total = report["mismatch"]
    assert total == len(heldout_documents()) and 0 < differ <= total
    assert "tokenize differently in llama.cpp" in " ".join(result.output.split())


def test_a_killed_export_leaves_no_output_and_the_next_one_cleans_up(moai_model, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import gguf

    env = {**os.environ, "MOAI_FAULT_KILL_AT": "export.tensor_written#5"}
    for args, out in ((["-o", tmp_path / "m.gguf"], tmp_path / "m.gguf"),
                      (["--format", "ollama", "-o", tmp_path / "o"], tmp_path / "o")):
        cmd = [sys.executable, "-m", "moai_cli", "export", str(moai_model), *map(str, args)]
        killed = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not out.exists() and any(p.name.startswith(f".{out.name}.") for p in tmp_path.iterdir())
        assert run(moai_model, *args).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "o"]
    assert len(gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors) == 25
