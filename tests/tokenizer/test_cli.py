"""Specification of `moai tokenizer train | extend | compare` as a user runs them: the seed's
flags, output layout, JSON reports, and bad input as one line with exit code 2 and nothing
written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moai_cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["tokenizer", *map(str, args)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from moai_llm import corpora

    d = tmp_path_factory.mktemp("corpus")
    (d / "ko.txt").write_text("\n".join(corpora.iter_texts("ko")) + "\n")
    (d / "en.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in corpora.iter_texts("en")))
    (d / "finance.jsonl").write_text("".join(
        json.dumps({"text": r["input"] + "\n" + r["output"]}, ensure_ascii=False) + "\n"
        for r in corpora.finance_qa("train")))
    return d


def test_train_with_seed_flags_writes_output_dir_slash_prefix(tmp_path, corpus):
    out = tmp_path / "tokenizers"
    result = run("train", "--input", corpus / "ko.txt", "--input", corpus / "en.jsonl", "--text_column", "body",
                 "--vocab_size", 600, "--min_frequency", 2, "--output_dir", out, "--model_prefix", "mine", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output_dir"] == str(out / "mine") and report["vocab_size"] == 600
    assert (out / "mine" / "tokenizer.json").is_file()


def test_output_dir_without_prefix_is_the_folder(tmp_path, corpus):
    result = run("train", "-i", corpus / "ko.txt", "--vocab-size", 400, "--output_dir", tmp_path / "tokenizers" / "test")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tokenizers" / "test" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("flag", ["--fast", "--turbo", "--ultrafast"])
def test_speed_modes(tmp_path, corpus, flag):
    result = run("train", "-i", corpus / "ko.txt", "--vocab-size", 500, "-o", tmp_path / "t", flag, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == flag.lstrip("-")


def test_multilingual_offline_says_it_uses_embedded_corpora(tmp_path):
    from moai_llm.progress import console

    with console.capture() as cap:  # messages go to stderr through moai's progress console
        result = run("train", "--multilingual", "ko", "en", "--max_samples_per_lang", 50, "--vocab-size", 400,
                     "-o", tmp_path / "t")
    assert result.exit_code == 0, result.output
    said = cap.get()
    assert "embedded ko corpus" in said and "embedded en corpus" in said and "not reachable" in said
    assert "embedded ja" not in said


def test_two_speed_modes_are_refused(tmp_path, corpus):
    result = run("train", "-i", corpus / "ko.txt", "--fast", "--turbo", "-o", tmp_path / "t")
    assert result.exit_code == 2 and "one speed mode" in result.output


@pytest.mark.parametrize("case", ["missing", "empty", "no-text-folder", "unknown-dataset", "small-vocab", "not-a-tokenizer-dir"])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "good.txt").write_text("some text here\n" * 50)
    out = tmp_path / "out"
    args = {
        "missing": ["-i", tmp_path / "nope.txt"],
        "empty": ["-i", tmp_path / "empty.txt"],
        "no-text-folder": ["-i", tmp_path / "imgs"],
        "unknown-dataset": ["--dataset", "moai-test/does-not-exist"],
        "small-vocab": ["-i", tmp_path / "good.txt", "--vocab-size", 100],
        "not-a-tokenizer-dir": ["-i", tmp_path / "good.txt"],
    }[case]
    if case == "not-a-tokenizer-dir":
        out.mkdir()
        (out / "notes.md").write_text("keep me")
    result = run("train", *args, "-o", out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "Traceback" not in result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("error:")]) == 1
    if case == "not-a-tokenizer-dir":
        assert sorted(p.name for p in out.iterdir()) == ["notes.md"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "moai_cli", "tokenizer", "train", "-i", str(tmp_path / "nope.txt"),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("tok") / "tokenizers" / "base"
    result = run("train", "-i", corpus / "ko.txt", "-i", corpus / "en.jsonl", "--text-column", "body",
                 "--vocab-size", 700, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_extend_reports_unchanged_lines_and_domain_gain(base_dir, corpus):
    out = base_dir.parent / "finance"
    result = run("extend", "--base_tokenizer", base_dir, "-i", corpus / "finance.jsonl", "--vocab_size", 800,
                 "--output_dir", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["vocab_size"] == 800 and report["reached"]
    assert report["domain_compression_gain"] > 0
    assert 0 < report["heldout_unchanged"] <= 1 and report["heldout_lines"] > 10


def test_extend_table_output(base_dir, corpus, tmp_path):
    result = run("extend", "--base-tokenizer", base_dir, "-i", corpus / "finance.jsonl", "--vocab-size", 750,
                 "-o", tmp_path / "ext")
    assert result.exit_code == 0, result.output
    assert "held-out lines unchanged" in result.output and "700 → 750" in result.output


def test_seed_extension_through_train_with_base_tokenizer(base_dir, corpus):
    # the seed extended with `train_tokenizer.py --base_tokenizer ... --vocab_size N --turbo`
    out = base_dir.parent / "seed-ext"
    result = run("train", "--base_tokenizer", base_dir, "--input", corpus / "finance.jsonl", "--vocab_size", 760,
                 "--turbo", "--output_dir", base_dir.parent, "--model_prefix", "seed-ext", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["vocab_size"] == 760 and report["base_vocab_size"] == 700
    assert (out / "tokenizer.json").is_file()


def test_seed_quickstart_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("train", "--multilingual", "ko", "en", "--vocab_size", 32000, "--max_samples_per_lang", 5000,
                 "--turbo", "--output_dir", "tokenizers/test")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tokenizers" / "test" / "tokenizer.json").is_file()
    assert "only" in result.output  # the small embedded corpora cannot fill 32k tokens: it says so


@pytest.mark.parametrize("case", ["smaller-vocab", "not-bpe"])
def test_extend_bad_input_exit_2_nothing_written(base_dir, corpus, tmp_path, case):
    base = base_dir
    if case == "not-bpe":
        from tokenizers import Tokenizer, models, trainers

        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.train_from_iterator(["a b c"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
        base = tmp_path / "wordlevel"
        base.mkdir()
        tok.save(str(base / "tokenizer.json"))
    result = run("extend", "--base-tokenizer", base, "-i", corpus / "finance.jsonl",
                 "--vocab-size", 500 if case == "smaller-vocab" else 900, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert ("not larger than" if case == "smaller-vocab" else "not a byte-level BPE") in result.output
    assert not (tmp_path / "out").exists()


def test_compare_defaults_to_every_tokenizer_under_tokenizers(base_dir, corpus, monkeypatch):
    monkeypatch.chdir(base_dir.parent.parent)
    result = run("compare", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    names = {r["tokenizer"] for r in rows}
    assert "base" in names
    langs = {r["set"] for r in rows if r["tokenizer"] == "base"}
    assert langs == {"ko", "en", "ja", "zh"}
    for r in rows:
        assert r["round_trip"] == 1.0 and r["chars_per_token"] > 0 and 0 <= r["byte_fallback"] <= 1


def test_compare_tables_on_own_input(base_dir, corpus):
    result = run("compare", base_dir, "--input", corpus / "finance.jsonl")
    assert result.exit_code == 0, result.output
    assert "bytes/tok" in result.output and "finance.jsonl" in result.output


def test_compare_without_tokenizers_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("compare")
    assert result.exit_code == 2 and "tokenizers" in result.output
