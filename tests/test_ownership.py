"""moai replaces only what it made (moai_llm/ownership.py): each output folder holds a marker
saying what made it; a folder that is not moai's output of the same kind is refused (exit 2,
every file that was there still there, byte for byte), `--force` included; outputs of moai
versions without a marker are recognised only by their exact contents."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moai_cli.app import app
from moai_llm.errors import MoaiInputError
from moai_llm.ownership import (
    MARKER,
    claim,
    foreign_names,
    kind_of,
    plain_name,
    read_marker,
    refuse_unsafe,
    write_marker,
)

DOCS = "".join(json.dumps({"text": f"hello world {i} the quick brown fox"}) + "\n" for i in range(60))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from moai_llm.tokenizer import train_tokenizer

    texts = [f"hello world {i} the quick brown fox" for i in range(200)]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok", vocab_size=300)


def snapshot(root):
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def prepare(tok, src, out, *extra):
    return invoke("data", "prepare", "-i", src, "--tokenizer", tok, "--seq-len", "64", "-o", out, *extra)


def test_claim_takes_new_empty_and_own_folders_and_refuses_the_rest(tmp_path):
    claim(tmp_path / "new", "dataset")
    (tmp_path / "empty").mkdir()
    claim(tmp_path / "empty", "dataset")
    write_marker(tmp_path / "mine", "dataset", "moai data prepare")
    claim(tmp_path / "mine", "dataset")
    with pytest.raises(MoaiInputError, match="is not a tokenizer folder \\(it is moai's prepared dataset\\)"):
        claim(tmp_path / "mine", "tokenizer")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MoaiInputError, match="it is a file"):
        claim(tmp_path / "file", "dataset")
    assert read_marker(tmp_path / "mine")["command"] == "moai data prepare"


def test_the_root_home_and_current_folders_and_folders_around_inputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    for where, words in (("/", "root folder"), ("~", "home folder"), (".", "current folder"),
                         (str(tmp_path), "current folder")):
        with pytest.raises(MoaiInputError, match=words):
            refuse_unsafe(where)
    monkeypatch.chdir(tmp_path / "home")  # one folder, two names: the home folder is named
    for where in ("~", "."):
        with pytest.raises(MoaiInputError, match="home folder"):
            refuse_unsafe(where)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "d.jsonl").write_text(DOCS)
    with pytest.raises(MoaiInputError, match="holds the input"):
        refuse_unsafe(tmp_path / "src", inputs=[tmp_path / "src" / "d.jsonl"])
    with pytest.raises(MoaiInputError, match="inside the input folder"):
        refuse_unsafe(tmp_path / "src" / "prep", inputs=[tmp_path / "src"])
    refuse_unsafe(tmp_path / "out", inputs=[tmp_path / "src", "wikitext", "hf://x"])


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/b", "..", ".", "", "~x", "a\\b"])
def test_model_prefix_is_a_name_not_a_path(name):
    with pytest.raises(MoaiInputError, match="must be a folder name, not a path"):
        plain_name(name, "--model-prefix")
    assert plain_name("my-tok", "--model-prefix") == "my-tok"


def test_model_prefix_cannot_write_outside_the_output_dir(tok, tmp_path):
    (tmp_path / "c.txt").write_text("hello world\n" * 50)
    (tmp_path / "a" / "b").mkdir(parents=True)
    before = snapshot(tmp_path)
    result = invoke("tokenizer", "train", "-i", tmp_path / "c.txt", "--vocab-size", "300",
                    "-o", tmp_path / "a" / "b", "--model-prefix", "../../x")
    assert result.exit_code == 2 and "--model-prefix '../../x'" in result.output, result.output
    assert snapshot(tmp_path) == before and not (tmp_path / "x").exists()


def test_data_prepare_never_replaces_a_folder_holding_any_manifest(tok, tmp_path):
    """Finding 1: `-o app` where app/ held a manifest.json replaced the whole folder."""
    (tmp_path / "d.jsonl").write_text(DOCS)
    app_dir = tmp_path / "app"
    (app_dir / "src").mkdir(parents=True)
    (app_dir / "manifest.json").write_text('{"name": "my-app", "version": "1.0"}')
    (app_dir / "src" / "main.js").write_text("console.log('mine')")
    (app_dir / "NOTES.txt").write_text("my notes")
    before = snapshot(tmp_path)
    for extra in ([], ["--force"]):
        result = prepare(tok, tmp_path / "d.jsonl", app_dir, *extra)
        assert result.exit_code == 2 and "is not a prepared dataset" in result.output, result.output
        assert snapshot(tmp_path) == before


def test_a_rebuild_keeps_a_users_files_in_moais_dataset(tok, tmp_path):
    """Finding 6: a rebuild deleted files a user had added to the dataset folder."""
    (tmp_path / "d.jsonl").write_text(DOCS)
    out = tmp_path / "DS3"
    assert prepare(tok, tmp_path / "d.jsonl", out).exit_code == 0
    assert kind_of(out) == "dataset" and foreign_names(out, "dataset") == []
    assert prepare(tok, tmp_path / "d.jsonl", out, "--force").exit_code == 0  # its own: replaced
    (out / "NOTES.txt").write_text("what I found in this data")
    before = snapshot(tmp_path)
    result = prepare(tok, tmp_path / "d.jsonl", out, "--force")
    assert result.exit_code == 2 and "also holds files moai did not make (NOTES.txt)" in result.output, result.output
    assert snapshot(tmp_path) == before


def test_a_dataset_of_an_earlier_moai_without_a_marker_is_recognised_by_its_contents(tok, tmp_path):
    (tmp_path / "d.jsonl").write_text(DOCS)
    out = tmp_path / "old"
    assert prepare(tok, tmp_path / "d.jsonl", out).exit_code == 0
    (out / MARKER).unlink()  # as moai versions before the marker wrote it
    assert kind_of(out) == "dataset"
    assert prepare(tok, tmp_path / "d.jsonl", out, "--force").exit_code == 0
    (out / MARKER).unlink()
    (out / "mine.txt").write_text("x")  # one extra file: no longer provably moai's
    assert kind_of(out) is None
    before = snapshot(tmp_path)
    assert prepare(tok, tmp_path / "d.jsonl", out, "--force").exit_code == 2
    assert snapshot(tmp_path) == before


def test_output_inside_the_input_folder_is_refused_every_time(tok, tmp_path):
    """It used to work once, then fail forever (the output was read back as input)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "d.jsonl").write_text(DOCS)
    before = snapshot(tmp_path)
    for _ in range(2):
        result = prepare(tok, tmp_path / "src", tmp_path / "src" / "prep")
        assert result.exit_code == 2 and "inside the input folder" in result.output, result.output
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_tokenizer_train_and_extend_never_replace_a_model_folder(tok, tmp_path, kind):
    """Finding 2: `tokenizer train -o RUN/final_model` (and extend into a checkpoint) replaced
    the model folder, because any folder with a tokenizer.json counted as a tokenizer."""
    import shutil

    (tmp_path / "c.txt").write_text("hello world\n" * 50)
    model = tmp_path / "RUN" / ("final_model" if kind == "model" else "checkpoints/step-3")
    shutil.copytree(tok, model)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    write_marker(model, kind, "moai pretrain")
    before = snapshot(tmp_path)
    for args in (["train", "-i", tmp_path / "c.txt", "--vocab-size", "300"],
                 ["extend", "--base-tokenizer", tok, "-i", tmp_path / "c.txt", "--vocab-size", "400"]):
        result = invoke("tokenizer", *args, "-o", model)
        assert result.exit_code == 2 and "is not a tokenizer folder" in result.output, result.output
        assert snapshot(tmp_path) == before


def test_a_tokenizer_is_replaced_when_it_is_moais_own(tmp_path):
    (tmp_path / "c.txt").write_text("hello world\n" * 50)
    for _ in range(2):
        result = invoke("tokenizer", "train", "-i", tmp_path / "c.txt", "--vocab-size", "300", "-o", tmp_path / "t")
        assert result.exit_code == 0, result.output
    assert kind_of(tmp_path / "t") == "tokenizer"
    (tmp_path / "t" / "NOTES.md").write_text("mine")
    result = invoke("tokenizer", "train", "-i", tmp_path / "c.txt", "--vocab-size", "300", "-o", tmp_path / "t")
    assert result.exit_code == 2 and "NOTES.md" in result.output
    assert (tmp_path / "t" / "NOTES.md").read_text() == "mine"


def test_the_quickstart_never_writes_into_a_users_folder(tmp_path):
    """Finding 3: the quickstart removed an earlier run in proj/pretrain, replaced proj/tokenizer
    holding a user's notes and overwrote proj/corpus.jsonl."""
    proj = tmp_path / "proj"
    (proj / "pretrain").mkdir(parents=True)
    (proj / "pretrain" / "run.yaml").write_text("settings: mine\nplan: mine\n")
    (proj / "tokenizer").mkdir()
    (proj / "tokenizer" / "NOTES.md").write_text("my notes")
    (proj / "corpus.jsonl").write_text('{"text": "my corpus"}\n')
    before = snapshot(tmp_path)
    result = invoke("quickstart", "--tiny", "-o", proj)
    assert result.exit_code == 2 and "is not a quickstart folder" in result.output, result.output
    assert snapshot(tmp_path) == before


def test_a_run_folder_of_an_earlier_moai_is_recognised_only_with_nothing_else_in_it(tmp_path):
    run = tmp_path / "run"
    (run / "final_model").mkdir(parents=True)
    (run / "run.yaml").write_text("moai_run: 2\nmode: pretrain\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 6.0}\n')
    assert kind_of(run) == "run" and foreign_names(run, "run") == []
    (run / "my-notes.md").write_text("mine")
    assert kind_of(run) is None
    (run / "my-notes.md").unlink()
    (run / "run.yaml").write_text("experiment: mine\n")  # a run.yaml moai did not write
    assert kind_of(run) is None
