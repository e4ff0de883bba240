"""Bad input: a clear one-line message, the right exit code, and nothing lost."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from moai_cli.app import app


def _tokenizer(path, specials, vocab_size=400):
    """A byte-level BPE tokenizer with `specials` (in id order) trained on a little text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, 안녕하세요 moai"] * 50, trainer=trainer)
    kwargs = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"} if "<|pad|>" in specials else {}
    PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs).save_pretrained(path)
    return path


def _invoke(args):
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def base_model(workdir, pretrain_args, tmp_path_factory):
    """A model folder (untied embeddings, tiny otherwise) from a one-step pretraining run."""
    import yaml

    from moai_llm.paths import preset_path

    root = tmp_path_factory.mktemp("base")
    config = yaml.safe_load(preset_path("models", "tiny").read_text())
    config.pop("description", None)
    config["tie_word_embeddings"] = False
    (root / "untied.yaml").write_text(yaml.safe_dump(config))
    out = root / "run"
    result = _invoke(pretrain_args(workdir, out, 1) + ["--model-config", str(root / "untied.yaml")])
    assert result.exit_code == 0, result.output
    return out / "final_model"


def test_tokenizer_without_chat_tokens_is_refused(workdir, pretrain_args, tmp_path):
    bad = _tokenizer(tmp_path / "plain", ["<|endoftext|>"])
    args = pretrain_args(workdir, tmp_path / "out", 2)
    args[args.index("--tokenizer") + 1] = str(bad)
    result = _invoke(args)
    assert result.exit_code == 2
    assert "lacks the special token(s) <|im_start|>, <|im_end|>" in result.output


def test_tokenizer_whose_ids_disagree_with_the_model_is_refused(workdir, base_model, tmp_path):
    final = base_model
    swapped = _tokenizer(tmp_path / "swapped", ["<|pad|>", "<|im_end|>", "<|im_start|>", "<|endoftext|>"])
    result = _invoke(["sft", "--pretrained-model", str(final), "--tokenizer", str(swapped),
                      "--dataset", str(workdir / "qa.jsonl"), "-o", str(tmp_path / "sft")])
    assert result.exit_code == 2
    assert "disagree" in result.output and "eos_token_id" in result.output


def test_data_prepared_with_another_tokenizer_is_refused(workdir, pretrain_args, tmp_path):
    from moai_llm import corpora
    from moai_llm.tokenizer import train_tokenizer

    other = train_tokenizer(list(corpora.iter_texts("en"))[:20], tmp_path / "other", vocab_size=300)
    args = pretrain_args(workdir, tmp_path / "out", 2)
    args[args.index("--tokenizer") + 1] = str(other)
    result = _invoke(args)
    assert result.exit_code == 2
    assert "prepared with another tokenizer" in result.output


def test_unwritable_output_folder(workdir, pretrain_args, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    result = _invoke(pretrain_args(workdir, blocker / "run", 2))
    assert result.exit_code == 2
    assert "cannot write there" in result.output
    assert blocker.read_text() == "keep me"


def test_unknown_model_preset_names_the_presets(workdir, pretrain_args, tmp_path):
    args = pretrain_args(workdir, tmp_path / "out", 2)
    args[args.index("--model") + 1] = "huge"
    result = _invoke(args)
    assert result.exit_code == 2 and "tiny" in result.output


def test_endless_nan_stops_with_a_clear_message_and_keeps_checkpoints(workdir, pretrain_args, tmp_path):
    out = tmp_path / "nan"
    result = _invoke(pretrain_args(workdir, out, 30) + ["--learning-rate", "1e30", "--warmup-steps", "0",
                                                         "--save-steps", "2"])
    assert result.exit_code == 1
    assert "step 6: the loss or gradient norm was NaN/inf at 5 steps" in result.output
    assert (out / "checkpoints" / "step-2" / "model.safetensors").is_file()
    assert not (out / "final_model").exists()


def test_a_model_holding_nan_is_refused_naming_the_tensor(workdir, pretrain_args, base_model, tmp_path):
    """One NaN row of the embedding used to train on, skipping the steps that met it (and an
    all-NaN model skipped every step and exited 0): a model folder is whole and finite or
    refused (exit 2) naming the tensor, before anything trains. A NaN step is
    tests/training/test_non_finite.py's."""
    import shutil

    from safetensors.torch import load_file, save_file

    poisoned = tmp_path / "poisoned"
    shutil.copytree(base_model, poisoned)
    weights_file = poisoned / "model.safetensors"
    weights = load_file(str(weights_file))
    weights["model.embed_tokens.weight"][1] = float("nan")
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    out = tmp_path / "skip"
    result = _invoke(pretrain_args(workdir, out, 2) + ["--pretrained-model", str(poisoned)])
    assert result.exit_code == 2, result.output
    assert "tensor model.embed_tokens.weight holds NaN/inf values" in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--lr-scheduler", "nosuch"], "unknown learning-rate schedule 'nosuch'"),
    (["--warmup-steps", "2", "--decay-steps", "5"], "warmup 2 + stable 0 + decay 5 steps exceed the run's 4 steps"),
    (["--lora-rank", "4", "--lora-target", "q_proj,attn"], "--lora-target q_proj,attn: attn matches no module"),
    (["--stages", "new-embeddings:2,all"], "--stages new-embeddings:2,all: the vocabulary did not grow"),
    (["--model", "nosuch"], "--model nosuch: no such model preset"),
])
def test_settings_that_cannot_work_are_refused_before_anything_is_written(workdir, pretrain_args, tmp_path,
                                                                          extra, message):
    """Schedule, LoRA, stage and preset mistakes exit 2 before the run folder, its lock or its
    data exist: raw sources are not even prepared (the preparation is never called)."""
    import sys

    from moai_llm.data import prepare

    args = pretrain_args(workdir, tmp_path / "out", 4)
    args[args.index("--dataset") + 1] = str(workdir / "docs.jsonl")  # raw: a run would prepare it
    prepared = []
    code = prepare.prepare_dataset.__code__

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            prepared.append(frame)

    sys.setprofile(profile)
    try:
        result = _invoke(args + extra)
    finally:
        sys.setprofile(None)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert prepared == [] and sorted(p.name for p in tmp_path.iterdir()) == []
