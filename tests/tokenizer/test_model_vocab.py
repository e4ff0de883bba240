"""Specification of `grow_embeddings`: models follow a bigger tokenizer, new rows are the mean of
the old ones, old rows are untouched, tied heads stay tied, and the grown model still runs."""

from __future__ import annotations

import pytest
import torch

from moai_llm.tokenizer.model_vocab import grow_embeddings


def tiny_qwen3(tied: bool):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


@pytest.mark.parametrize("tied", [False, True])
def test_grows_rows_with_mean_of_old_rows(tied):
    model = tiny_qwen3(tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()

    assert grow_embeddings(model, 80) is True

    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    assert new_in.shape == (80, 32) and new_out.shape == (80, 32)
    assert model.config.vocab_size == 80
    torch.testing.assert_close(new_in[:64], old_in)
    torch.testing.assert_close(new_in[64:], old_in.mean(0).expand(16, 32))
    torch.testing.assert_close(new_out[:64], old_out)
    torch.testing.assert_close(new_out[64:], old_out.mean(0).expand(16, 32))
    assert (new_out is new_in) == tied


def test_grown_model_runs_and_trains_on_new_ids():
    model = tiny_qwen3(tied=False)
    grow_embeddings(model, 70)
    ids = torch.tensor([[1, 65, 69, 3]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 4, 70)
    out.loss.backward()
    assert model.get_input_embeddings().weight.grad[69].abs().sum() > 0


def test_does_not_shrink_or_touch_a_big_enough_model(capsys):
    model = tiny_qwen3(tied=False)
    before = model.get_input_embeddings().weight.detach().clone()
    assert grow_embeddings(model, 64) is False
    assert grow_embeddings(model, 10) is False
    assert torch.equal(model.get_input_embeddings().weight, before)
    assert model.config.vocab_size == 64


def test_says_that_it_grew(capsys):
    from moai_llm.progress import console

    with console.capture() as cap:
        grow_embeddings(tiny_qwen3(tied=True), 66)
    assert "64 → 66" in cap.get()


def test_moai_model_grows_too():
    modeling = pytest.importorskip("moai_llm.modeling")
    if not hasattr(modeling, "MoaiForCausalLM"):
        pytest.skip("MoaiForCausalLM not built yet")
    from moai_llm.config import MoaiConfig

    config = MoaiConfig.from_preset("tiny")
    config.vocab_size = 96
    model = modeling.MoaiForCausalLM(config)
    old = model.get_input_embeddings().weight.detach().clone()
    assert grow_embeddings(model, 128)
    assert model.get_input_embeddings().weight.shape[0] == 128
    torch.testing.assert_close(model.get_input_embeddings().weight[96:], old.mean(0).expand(32, -1))
    out = model(input_ids=torch.tensor([[5, 127]]))
    assert out.logits.shape[-1] == 128
