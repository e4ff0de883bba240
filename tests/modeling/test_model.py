"""MoaiForCausalLM against transformers' Qwen3ForCausalLM: interchange, logits, generation,
loss path and gradient checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

from moai_llm.modeling import MoaiForCausalLM

from tiny_models import tiny_config

VARIANTS = [(False, True), (False, False), (True, True), (True, False)]
IDS = ["rope-tied", "rope-untied", "yarn-tied", "yarn-untied"]
SEQ = 96  # longer than YaRN's original 32 positions, so the scaling is exercised


def _ids(batch=2, seq=SEQ, vocab=128):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("yarn", "tie"), VARIANTS, ids=IDS)
def test_saved_moai_model_loads_in_stock_transformers_with_equal_logits(tmp_path, yarn, tie):
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config(yarn=yarn, tie=tie)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and "auto_map" not in config
    assert (tmp_path / "model.safetensors").is_file()

    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    assert type(stock) is Qwen3ForCausalLM
    x = _ids()
    with torch.no_grad():
        ours, ref = model(x).logits, stock(x).logits
    assert ours.abs().max() > 1  # not a degenerate all-zero comparison
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("yarn", "tie"), VARIANTS, ids=IDS)
def test_transformers_qwen3_directory_loads_in_moai_with_equal_logits(tmp_path, yarn, tie):
    torch.manual_seed(0)
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
    cfg = Qwen3Config(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rope_parameters={"rope_theta": 10000.0, **(rope if yarn else {"rope_type": "default"})},
        tie_word_embeddings=tie, initializer_range=0.2,
    )  # fmt: skip
    stock = Qwen3ForCausalLM(cfg).eval()
    stock.save_pretrained(tmp_path)
    model = MoaiForCausalLM.from_pretrained(tmp_path).eval()
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    x = _ids()
    with torch.no_grad():
        assert (model(x).logits - stock(x).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("yarn", "tie"), [(False, True), (True, False)], ids=["rope-tied", "yarn-untied"]
)
def test_greedy_generation_with_cache_equals_without_and_equals_transformers(tmp_path, yarn, tie):
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config(yarn=yarn, tie=tie)).eval()
    model.save_pretrained(tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = _ids(batch=1, seq=8)
    kw = dict(max_new_tokens=32, do_sample=False, pad_token_id=0)
    cached = model.generate(prompt, use_cache=True, **kw)
    uncached = model.generate(prompt, use_cache=False, **kw)
    reference = stock.generate(prompt, **kw)
    assert cached.shape == (1, 40)
    assert len(set(cached[0, 8:].tolist())) > 3  # a real sequence, not one token repeated
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, reference)


def test_left_padded_batch_matches_transformers_on_real_tokens(tmp_path):
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = _ids(batch=2, seq=12)
    mask = torch.ones_like(x)
    mask[0, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(x, attention_mask=mask, position_ids=positions).logits
        ref = stock(x, attention_mask=mask, position_ids=positions).logits
    assert torch.isfinite(ours).all()
    real = mask.bool()
    assert (ours[real] - ref[real]).abs().max().item() <= 1e-4


def test_labels_give_the_full_logits_cross_entropy_without_materialising_logits():
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config(loss_chunk_size=16)).eval()
    x = _ids(batch=2, seq=24)
    labels = x.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        out = model(x, labels=labels)
        logits = model(x).logits
    assert out.logits is None
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 128), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)

    n = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        summed = model(x, labels=labels, num_items_in_batch=2 * n).loss
    torch.testing.assert_close(summed, expected / 2, rtol=1e-5, atol=1e-5)


def test_loss_fn_is_replaceable_and_gets_hidden_states_weight_and_shifted_labels():
    model = MoaiForCausalLM(tiny_config(loss_chunk_size=16))
    seen = {}

    def loss_fn(hidden, weight, labels, num_items_in_batch=None):
        seen.update(hidden=hidden.shape, weight=weight, labels=labels.clone(), n=num_items_in_batch)
        return hidden.sum() * 0

    model.loss_fn = loss_fn
    x = _ids(batch=2, seq=10)
    model(x, labels=x, num_items_in_batch=7)
    assert seen["hidden"] == (20, 64) and seen["weight"] is model.lm_head.weight
    assert seen["n"] == 7
    assert seen["labels"].view(2, 10)[:, :-1].tolist() == x[:, 1:].tolist()
    assert (seen["labels"].view(2, 10)[:, -1] == -100).all()
    model.loss_fn = None  # back to the default fused loss
    assert model.loss_fn.keywords["chunk_size"] == 16


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    from moai_llm.modeling.activations import MoaiMLP

    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config(tie=False)).train()
    x = _ids(batch=2, seq=32)

    def grads():
        model.zero_grad()
        model(x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    calls = []
    mlp_forward = MoaiMLP.forward
    monkeypatch.setattr(MoaiMLP, "forward", lambda self, h: calls.append(1) or mlp_forward(self, h))
    model.gradient_checkpointing_enable()
    layer = model.model.layers[0]
    assert layer.gradient_checkpointing
    assert layer._gradient_checkpointing_func.keywords["use_reentrant"] is False
    checkpointed = grads()
    # Two layers, each run in forward and again in backward: checkpointing is active.
    assert len(calls) == 4
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_inputs_embeds_and_logits_to_keep():
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).eval()
    x = _ids(batch=1, seq=10)
    with torch.no_grad():
        full = model(x).logits
        last = model(inputs_embeds=model.model.embed_tokens(x), logits_to_keep=1).logits
    assert last.shape == (1, 1, 128)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_bf16_autocast_training_step_and_bf16_weights_run():
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).train()
    x = _ids(batch=2, seq=32)
    fp32_loss = model(x, labels=x).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, labels=x).loss
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - fp32_loss.item()) < 0.1
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model = model.to(torch.bfloat16).eval()
    out = model.generate(x[:1, :4], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 12)


def test_unpacked_forward_and_backward_compile_as_one_graph():
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).train()
    x = _ids(batch=2, seq=16)
    eager = model(x).logits
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    logits = compiled(x).logits
    logits.sum().backward()
    assert (logits - eager).abs().max().item() <= 1e-5


def test_an_nn_module_loss_can_be_assigned_and_stays_out_of_the_state_dict():
    class HalfCE(torch.nn.Module):
        def forward(self, hidden, weight, labels, num_items_in_batch=None):
            logits = hidden @ weight.t()
            return 0.5 * F.cross_entropy(logits, labels, ignore_index=-100)

    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).eval()
    x = _ids(batch=1, seq=12)
    with torch.no_grad():
        default = model(x, labels=x).loss
        model.loss_fn = HalfCE()
        half = model(x, labels=x).loss
    torch.testing.assert_close(half, default / 2, rtol=1e-5, atol=1e-5)
    assert not any(k.startswith("loss_fn") for k in model.state_dict())


def test_left_padded_batch_generation_equals_transformers(tmp_path):
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(4, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(x)
    mask[0, :3], x[0, :3] = 0, 0
    kw = dict(attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(x, **kw), stock.generate(x, **kw))
