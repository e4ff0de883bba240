"""Tokenizer folders: loading never runs a folder's code unless asked, damaged files are named,
saving refuses a disk without room, and a folder follows the umask."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest
from faults import make_hostile

from moai_llm.errors import DiskFullError, MoaiInputError
from moai_llm.tokenizer import load_tokenizer, train_tokenizer

TEXTS = ["hello world, the quick brown fox", "금리가 오르면 대출 이자도 오릅니다."] * 40


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("tok") / "tok", vocab_size=320)


def test_a_folder_naming_code_loads_its_tokenizer_json_and_never_runs_the_code(tok, tmp_path):
    hostile = make_hostile(shutil.copytree(tok, tmp_path / "hostile"))
    code = f"from moai_llm.tokenizer import load_tokenizer; print(load_tokenizer({str(hostile)!r})('hello')['input_ids'])"
    done = subprocess.run(f"echo y | {sys.executable} -c \"{code}\"", shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(load_tokenizer(tok)("hello")["input_ids"])
    assert "names Python code (evil.EvilTokenizer" in " ".join(done.stderr.split())
    assert not (hostile / "MARKER").exists()


def test_code_runs_only_when_trusted(tok, tmp_path):
    hostile = make_hostile(shutil.copytree(tok, tmp_path / "hostile"))
    load_tokenizer(hostile)
    assert not (hostile / "MARKER").exists()
    assert type(load_tokenizer(hostile, trust_remote_code=True)).__name__ == "EvilTokenizer"
    assert (hostile / "MARKER").exists()  # the flag is what lets it run


def test_a_folder_that_only_code_defines_is_refused_without_the_flag(tok, tmp_path):
    hostile = make_hostile(shutil.copytree(tok, tmp_path / "code"), keep_tokenizer_json=False)
    with pytest.raises(MoaiInputError, match="defined by Python code in the folder .* --trust-remote-code"):
        load_tokenizer(hostile)
    assert not (hostile / "MARKER").exists()


def test_a_truncated_tokenizer_json_is_named(tok, tmp_path):
    cut = shutil.copytree(tok, tmp_path / "cut")
    data = (cut / "tokenizer.json").read_bytes()
    (cut / "tokenizer.json").write_bytes(data[: len(data) // 3])
    with pytest.raises(MoaiInputError, match=r"cut/tokenizer.json: cannot be loaded as a tokenizer \("):
        load_tokenizer(cut)
    (cut / "tokenizer.json").write_bytes(data)
    (cut / "tokenizer_config.json").write_text("{ not json")
    with pytest.raises(MoaiInputError, match="cut/tokenizer_config.json: not valid JSON"):
        load_tokenizer(cut)


@pytest.mark.parametrize(("mask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_a_trained_folder_follows_the_umask(tmp_path, mask, folder, file):
    old = os.umask(mask)
    try:
        out = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == folder
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {file}


def test_a_disk_without_room_is_refused_before_writing(tmp_path):
    from faults import small_disk

    with small_disk(tmp_path / "disk", size="16k") as disk:
        (disk / "tok").mkdir()
        (disk / "tok" / "tokenizer.json").write_text("{}")  # a previous tokenizer stays as it was
        texts = [" ".join(f"word{i} token{i * 7}" for i in range(j, j + 50)) for j in range(0, 3000, 50)]
        with pytest.raises(DiskFullError, match=r"disk/tok: the tokenizer needs about [0-9.]+ KB but only"):
            train_tokenizer(texts, disk / "tok", vocab_size=1000)
        assert sorted(p.name for p in disk.iterdir()) == ["tok"]
        assert (disk / "tok" / "tokenizer.json").read_text() == "{}"
