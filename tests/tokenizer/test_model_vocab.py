"""Specification of `grow_embeddings`: models follow a bigger tokenizer, new rows are the mean of
the old ones, old rows are untouched, tied heads stay tied, and the grown model still runs."""

from __future__ import annotations

import pytest
import torch

from moai_llm.tokenizer.model_vocab import grow_embeddings, new_token_pieces


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


# --- new tokens start from their pieces -------------------------------------------------------

GENERAL = ["The bank raised the interest rate again this year.", "금리가 오르면 대출 이자도 오릅니다.",
           "We walked to the river and talked about the weather."] * 30
DOMAIN = ["The bond yield and the interest rate moved together.", "카드 결제 한도와 할부 수수료를 확인하세요.",
          "Dividend yield, bond yield, interest rate."] * 30


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from moai_llm.progress import set_quiet
    from moai_llm.tokenizer import train_tokenizer
    from moai_llm.tokenizer.extend import extend_tokenizer

    root = tmp_path_factory.mktemp("vocab")
    base = train_tokenizer(GENERAL, root / "base", vocab_size=300, show_progress=False)
    set_quiet(True)
    extend_tokenizer(base, DOMAIN, root / "grown", vocab_size=340)
    set_quiet(False)
    return base, root / "grown"


def _backend(folder):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.mark.parametrize("tied", [False, True])
def test_a_pieces_row_is_exactly_the_mean_of_its_pieces_rows(tokenizers, tied):
    base_dir, grown_dir = tokenizers
    base, grown = _backend(base_dir), _backend(grown_dir)
    first, last = base.get_vocab_size(), grown.get_vocab_size()
    model = tiny_qwen3(tied)
    grow_embeddings(model, 320)  # a base model with as many rows as the base tokenizer has ids
    old_in = model.get_input_embeddings().weight.detach().clone()[:first]
    old_out = model.get_output_embeddings().weight.detach().clone()[:first]
    assert grow_embeddings(model, last, "pieces", base_tokenizer=base_dir, new_tokenizer=grown_dir)
    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(new_in[:first], old_in) and torch.equal(new_out[:first], old_out)
    pieces = new_token_pieces(base, grown, first, last)
    assert sorted(pieces) == list(range(first, last)) and last - first == 40
    for token_id, ids in pieces.items():
        # The pieces spell exactly the new token (byte-level spelling, so tokens that end
        # mid-character are covered), e.g. " yield" -> " y" + "ie" + "l" + "d".
        assert len(ids) >= 2 and "".join(base.id_to_token(i) for i in ids) == grown.id_to_token(token_id)
        if "\ufffd" not in grown.decode([token_id]):  # whole characters: what the base tokenizer makes of the text
            assert ids == base.encode(grown.decode([token_id]), add_special_tokens=False).ids
        assert torch.equal(new_in[token_id], old_in[ids].mean(0))
        assert torch.equal(new_out[token_id], old_out[ids].mean(0))


def test_new_tokens_on_padding_rows_are_initialised_and_other_padding_stays(tokenizers):
    # Qwen-like: the base model already has rows beyond its tokenizer; new tokens land on them.
    base_dir, grown_dir = tokenizers
    first, last = _backend(base_dir).get_vocab_size(), _backend(grown_dir).get_vocab_size()
    model = tiny_qwen3(tied=False)
    grow_embeddings(model, 384)
    before = model.get_input_embeddings().weight.detach().clone()
    assert grow_embeddings(model, last, "pieces", base_tokenizer=base_dir, new_tokenizer=grown_dir)
    after = model.get_input_embeddings().weight
    assert after.shape[0] == 384 and model.config.vocab_size == 384  # no rows needed adding
    assert not torch.equal(after[first:last], before[first:last])
    assert torch.equal(after[last:], before[last:]) and torch.equal(after[:first], before[:first])


def test_a_tokenizer_that_is_not_an_extension_is_refused(tokenizers, tmp_path):
    from moai_llm.errors import MoaiInputError
    from moai_llm.tokenizer import train_tokenizer

    base_dir, _ = tokenizers
    other = train_tokenizer(DOMAIN, tmp_path / "other", vocab_size=340, show_progress=False)
    model = tiny_qwen3(tied=False)
    grow_embeddings(model, 320)
    with pytest.raises(MoaiInputError, match="not an extension of the base model's"):
        grow_embeddings(model, 340, "pieces", base_tokenizer=base_dir, new_tokenizer=other)
    with pytest.raises(MoaiInputError, match="--new-embeddings pieces needs the base model's tokenizer"):
        grow_embeddings(model, 340, "pieces")
    with pytest.raises(MoaiInputError, match="--new-embeddings random: unknown method"):
        grow_embeddings(model, 340, "random")


@pytest.mark.slow
def test_pieces_starts_much_closer_to_the_base_model_than_mean():
    """A small model trained on the embedded corpora, its tokenizer extended with finance
    vocabulary: bits per byte on held-out finance text before any training with the new tokens
    (benchmarks/bench_vocab.py --quick; RESULTS.md has the full-size figures)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_vocab import QUICK, figures

    domain = figures(QUICK)["domain"]
    assert domain["pieces/base"] - 1 < 0.5 * (domain["mean/base"] - 1)
    assert domain["pieces"] < domain["mean"]
