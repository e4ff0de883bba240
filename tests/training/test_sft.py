"""`moai sft`: from a model folder, on chat rows with loss on assistant turns only, growing
the embeddings when the tokenizer has grown."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moai_cli.app import app


@pytest.fixture(scope="module")
def pretrained(workdir, pretrain_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-base") / "run"
    result = CliRunner().invoke(app, pretrain_args(workdir, out, 2))
    assert result.exit_code == 0, result.output
    return out / "final_model"


def test_sft_trains_on_assistant_tokens_and_writes_a_chat_model(workdir, pretrained, tmp_path):
    from transformers import AutoModelForCausalLM

    from moai_llm.data import load_prepared

    out = tmp_path / "sft"
    result = CliRunner().invoke(app, ["sft", "--pretrained-model", str(pretrained),
                                      "--dataset", str(workdir / "qa.jsonl"), "-o", str(out),
                                      "--max-steps", "3", "--seq-len", "128", "--batch-size", "2",
                                      "--gradient-accumulation-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "moai chat" in result.output
    rows = load_prepared(out / "data")
    row = rows[0]
    labelled = sum(1 for x in row["labels"] if x != -100)
    assert 0 < labelled < len(row["labels"])  # prompts carry no loss
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3
    model = AutoModelForCausalLM.from_pretrained(out / "final_model")
    assert model.config.vocab_size == AutoModelForCausalLM.from_pretrained(pretrained).config.vocab_size


def test_sft_grows_embeddings_for_a_grown_tokenizer(workdir, pretrained, tmp_path):
    from transformers import AutoModelForCausalLM

    from moai_llm.tokenizer import load_tokenizer

    tok = load_tokenizer(pretrained)
    new_words = [f"카드상품{i}" for i in range(70)]
    tok.add_tokens(new_words)
    tok.save_pretrained(tmp_path / "grown")
    out = tmp_path / "sft-grown"
    result = CliRunner().invoke(app, ["sft", "--pretrained-model", str(pretrained),
                                      "--tokenizer", str(tmp_path / "grown"),
                                      "--dataset", str(workdir / "qa.jsonl"), "-o", str(out),
                                      "--max-steps", "2", "--seq-len", "128", "--batch-size", "2",
                                      "--gradient-accumulation-steps", "1"])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(out / "final_model")
    assert model.config.vocab_size >= len(tok) and model.config.vocab_size % 64 == 0
    assert model.get_input_embeddings().weight.shape[0] == model.config.vocab_size


def test_sft_without_a_model_is_refused(workdir, tmp_path):
    result = CliRunner().invoke(app, ["sft", "--tokenizer", str(workdir / "tok"),
                                      "--dataset", str(workdir / "qa.jsonl"), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--pretrained-model" in result.output


def test_sft_accepts_data_prepared_with_the_original_tokenizer(workdir, pretrained, tmp_path):
    """Checkpoints and final_model carry the tokenizer files byte for byte, so data prepared with
    the tokenizer folder the model was trained with is recognised as matching."""
    from moai_llm.data import prepare_dataset

    prepare_dataset([str(workdir / "qa.jsonl")], workdir / "tok", 128, tmp_path / "sft-data", mode="sft")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (pretrained / name).read_bytes() == (workdir / "tok" / name).read_bytes()
    result = CliRunner().invoke(app, ["sft", "--pretrained-model", str(pretrained), "--dataset",
                                      str(tmp_path / "sft-data"), "-o", str(tmp_path / "sft"),
                                      "--max-steps", "1", "--batch-size", "2",
                                      "--gradient-accumulation-steps", "1"])
    assert result.exit_code == 0, result.output
