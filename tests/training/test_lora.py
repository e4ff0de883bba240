"""LoRA through peft on moai's Qwen3 model: it learns, merges into a stock Qwen3 model that gives
the same logits, counts parameters as peft does (and as the planner's arithmetic does without
building anything), keeps new token rows trainable, saves a small adapter, and refuses bad
settings with one line."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")  # the `lora` extra (installed in CI through `dev`)

from moai_llm.adapters import (
    adapter_state,
    load_adapter_model,
    load_adapter_state,
    merge,
    save_adapter,
)
from moai_llm.errors import MoaiInputError
from moai_llm.training.lora import (
    apply_lora,
    lora_memory_facts,
    quantization_config,
    trainable_parameters,
)

OLD, NEW = 96, 112


def _config(tied=False):
    from moai_llm.config import MoaiConfig

    return MoaiConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      tie_word_embeddings=tied)


def _model(tied=False, seed=0):
    from moai_llm.modeling import MoaiForCausalLM

    torch.manual_seed(seed)
    return MoaiForCausalLM(_config(tied))


def _batch():
    return torch.randint(0, NEW, (4, 24), generator=torch.Generator().manual_seed(1))


def _train(model, steps=25, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids, losses = _batch(), []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_loss_decreases_with_only_the_adapter_training():
    peft_model = apply_lora(_model(), rank=4, alpha=8)
    base_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    losses = _train(peft_model)
    assert losses[-1] < losses[0] - 0.3  # 4.86 -> 4.40 nats in 25 steps, measured
    for name, p in peft_model.named_parameters():
        if name in base_before:
            assert torch.equal(p, base_before[name]), name  # the base is frozen


@pytest.mark.parametrize("tied", [False, True])
def test_merged_model_equals_base_plus_adapter_and_is_a_stock_qwen3_folder(tied, tmp_path):
    from transformers import AutoModelForCausalLM

    peft_model = apply_lora(_model(tied), rank=4, dropout=0.1, trainable_new_rows=range(OLD, NEW))
    _train(peft_model, steps=5)
    peft_model.eval()
    ids = _batch()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    merged = merge(peft_model)
    assert type(merged).__name__ == "MoaiForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-5)
    merged.save_pretrained(tmp_path / "final_model")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "final_model" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "model.embed_tokens.weight" in keys and all(k.startswith(("model.", "lm_head.")) for k in keys)
    assert not any("lora" in k or "base_layer" in k or "token_adapter" in k for k in keys)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model", trust_remote_code=False)
    assert type(stock).__name__ == "Qwen3ForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(stock(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("target", "tied", "rows"), [
    ("all-linear", False, range(OLD, NEW)), ("all-linear", True, range(OLD, NEW)),
    ("q_proj,v_proj", False, None), (["o_proj", "down_proj"], True, range(OLD, NEW)),
])
def test_trainable_counts_agree_with_peft_and_with_the_planners_arithmetic(target, tied, rows):
    peft_model = apply_lora(_model(tied), rank=4, target=target, trainable_new_rows=rows)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable_parameters(peft_model) == trainable
    facts = lora_memory_facts(_config(tied), rank=4, target=target, new_rows=len(rows or []))
    assert facts["trainable"] == trainable
    assert facts["frozen"] == sum(p.numel() for p in _model(tied).parameters())


def test_new_rows_train_and_old_rows_stay(tmp_path):
    base = _model()
    before = base.get_input_embeddings().weight.detach().clone()
    before_head = base.get_output_embeddings().weight.detach().clone()
    peft_model = apply_lora(base, rank=4, trainable_new_rows=range(OLD, NEW))
    _train(peft_model, steps=5)
    merged = merge(peft_model)
    embed, head = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
    assert torch.equal(embed[:OLD], before[:OLD]) and torch.equal(head[:OLD], before_head[:OLD])
    assert not torch.equal(embed[OLD:NEW], before[OLD:NEW]) and not torch.equal(head[OLD:NEW], before_head[OLD:NEW])
    assert torch.equal(embed[NEW:], before[NEW:])  # padding rows are not new tokens


def test_adapter_is_small_saves_and_loads_onto_its_base(tmp_path):
    from moai_llm.progress import set_quiet

    base = _model(seed=3)
    base.save_pretrained(tmp_path / "base")
    peft_model = apply_lora(base, rank=2, trainable_new_rows=range(OLD, NEW))
    _train(peft_model, steps=3)
    peft_model.eval()
    ids = _batch()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    out = save_adapter(peft_model, tmp_path / "final_adapter", base_model=str(tmp_path / "base"))
    adapter_bytes = (out / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.5 * (tmp_path / "base" / "model.safetensors").stat().st_size
    assert not list(tmp_path.glob(".final_adapter*"))  # no temporary folder left behind
    set_quiet(True)
    loaded = load_adapter_model(out)
    set_quiet(False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


def test_wrapping_and_loading_an_adapter_print_no_deprecation_warning(tmp_path, recwarn):
    """peft asks transformers a deprecated property; a person running LoRA sft or chatting with a
    final_adapter/ must not see transformers' FutureWarning about it."""
    from moai_llm.progress import set_quiet

    base = _model(seed=4)
    base.save_pretrained(tmp_path / "base")
    out = save_adapter(apply_lora(base, rank=2), tmp_path / "adapter", base_model=str(tmp_path / "base"))
    set_quiet(True)
    load_adapter_model(out)
    set_quiet(False)
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]


def test_checkpointed_adapter_state_restores_exactly():
    peft_model = apply_lora(_model(), rank=4, trainable_new_rows=range(OLD, NEW))
    _train(peft_model, steps=3)
    state = {k: v.clone() for k, v in adapter_state(peft_model).items()}
    assert all("lora_" in k or "trainable_tokens" in k for k in state)
    fresh = apply_lora(_model(), rank=4, trainable_new_rows=range(OLD, NEW))
    load_adapter_state(fresh, state)
    for (name, a), (_, b) in zip(peft_model.named_parameters(), fresh.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_targets_that_match_nothing_list_the_module_names():
    with pytest.raises(MoaiInputError, match=r"--lora-target q_proj,query: query matches no module; the model's "
                                             r"Linear modules are down_proj, gate_proj, k_proj, lm_head, o_proj"):
        apply_lora(_model(), rank=4, target="q_proj,query")
    with pytest.raises(MoaiInputError, match="query_key_value matches no module"):
        lora_memory_facts(_config(), rank=4, target="query_key_value")


@pytest.mark.parametrize(("kwargs", "flag"), [({"rank": 0}, "--lora-rank 0"), ({"rank": 4, "alpha": -1}, "--lora-alpha"),
                                               ({"rank": 4, "dropout": 1.5}, "--lora-dropout 1.5")])
def test_bad_settings_are_refused(kwargs, flag):
    with pytest.raises(MoaiInputError, match=flag):
        apply_lora(_model(), **kwargs)


def test_qlora_loads_nf4_with_double_quantisation_computing_in_fp32_on_the_cpu():
    import torch

    assert quantization_config(False, "cpu") is None
    config = quantization_config(True, "cpu")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert quantization_config(True, "cuda").bnb_4bit_compute_dtype == torch.bfloat16


def test_memory_facts_for_a_hub_size_model_without_building_it():
    from moai_llm.config import MoaiConfig

    facts = lora_memory_facts(MoaiConfig.from_preset("qwen3-4b"), rank=16, new_rows=1000)
    # 36 layers x 16 x (q 2560+4096, k,v 2560+1024 each, o 4096+2560, gate,up 2560+9728 each, down 9728+2560)
    assert facts["adapter_parameters"] == 36 * 16 * 57344
    assert facts["new_row_parameters"] == 1000 * 2560  # tied: the embedding's rows only
    assert facts["trainable"] < 0.01 * facts["frozen"]


def test_chat_loads_a_runs_final_adapter_onto_its_hub_style_base(tmp_path):
    from qwen_style import write_qwen_style_model

    from moai_llm.inference import load_for_chat
    from moai_llm.pretrained import load_model, load_tokenizer, resolve_pretrained

    base = resolve_pretrained(write_qwen_style_model(tmp_path / "base", padded_rows=8))
    tokenizer = load_tokenizer(base)
    peft_model = apply_lora(load_model(base), rank=2, target="q_proj,v_proj")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter changes the model's answers
    peft_model.eval()
    save_adapter(peft_model, tmp_path / "run" / "final_adapter", base_model=str(base.path), tokenizer=tokenizer)
    model, chat_tokenizer, info = load_for_chat(tmp_path / "run")
    assert info["source"] == "final_adapter" and len(chat_tokenizer) == len(tokenizer)
    ids = torch.tensor([[1, 2, 3, base.special_token_ids["<|im_end|>"]]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=0, atol=1e-5)
