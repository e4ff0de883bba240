"""FlexAttention backend: the document block mask equals torch's own construction, flex equals
eager on packed and unpacked rows (outputs and gradients), nothing crosses a document
boundary, decoding keeps the SDPA path, and a flex model saves as a stock Qwen3 folder.

torch 2.13 has no flex backward on the CPU: there the plan falls back to SDPA whenever
gradients are needed, so on this CPU the gradient tests check that fallback; on a CUDA
machine the same tests run the flex kernel's backward."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask
from transformers import AutoModelForCausalLM, Qwen3ForCausalLM

from moai_llm.modeling import MoaiForCausalLM
from moai_llm.modeling.attention import (
    FLEX,
    AttentionPlan,
    attention_backends,
    eager_attention,
    resolve_attn_implementation,
)
from moai_llm.modeling.flex import document_block_mask, flex_attention, flex_supports_backward

from tiny_models import tiny_config

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]  # fmt: skip
DOCS = (9, 5, 14, 12)  # one packed row of 40 tokens
T = sum(DOCS)


def _positions(lengths=DOCS) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths])[None]


def _pair(device: str = "cpu", **overrides) -> tuple[MoaiForCausalLM, MoaiForCausalLM]:
    """The same random weights under flex and under eager attention."""
    models = []
    for backend in (FLEX, "eager"):
        torch.manual_seed(0)
        cfg = tiny_config(attn_implementation=backend, **overrides)
        models.append(MoaiForCausalLM(cfg).to(device))
    return models[0], models[1]


@pytest.mark.parametrize("lengths,block", [
    ((40,), 16), ((9, 5, 14, 12), 8), ((1, 1, 30, 8), 8), ((16, 16, 8), 16), ((3,) * 13 + (1,), 8),
])  # fmt: skip
def test_document_block_mask_equals_create_block_mask(lengths, block):
    positions = torch.cat([_positions(lengths), _positions(lengths[::-1])])
    doc = (positions == 0).cumsum(1)

    def same_document_causal(b, h, q, kv):
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    ref = create_block_mask(same_document_causal, 2, None, T, T, device="cpu", BLOCK_SIZE=block)
    got = document_block_mask(positions, block_size=block)
    assert torch.equal(got.to_dense(), ref.to_dense())
    for a, b in [(got.kv_num_blocks, ref.kv_num_blocks),
                 (got.full_kv_num_blocks, ref.full_kv_num_blocks)]:  # fmt: skip
        assert torch.equal(a, b)
    for num, mine, theirs in [(ref.kv_num_blocks, got.kv_indices, ref.kv_indices),
                              (ref.full_kv_num_blocks, got.full_kv_indices, ref.full_kv_indices)]:  # fmt: skip
        for row, q_block in torch.cartesian_prod(torch.arange(2), torch.arange(num.shape[-1])):
            n = int(num[row, 0, q_block])
            assert torch.equal(mine[row, 0, q_block, :n], theirs[row, 0, q_block, :n])
    if len(lengths) > 1:
        assert int(got.full_kv_num_blocks.sum()) + int(got.kv_num_blocks.sum()) < (
            got.kv_num_blocks.shape[-1] ** 2 * 2
        )  # blocks between documents are skipped


def test_flex_kernel_equals_eager_with_gqa():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, T, 16, generator=gen)
    k, v = torch.randn(2, 2, T, 16, generator=gen), torch.randn(2, 2, T, 16, generator=gen)
    positions = torch.cat([_positions(), torch.arange(T)[None]])
    plan = AttentionPlan.build("eager", positions, None, q_len=T, past_len=0, dtype=torch.float32)
    expected = eager_attention(q, k, v, plan, 0.25, 0.0)
    got = flex_attention(q, k, v, document_block_mask(positions), 0.25)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_flex_model_equals_eager_forward(device, packed):
    flex, eager = _pair(device)
    x = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(2)).to(device)
    positions = _positions().expand(2, -1) if packed else torch.arange(T)[None].expand(2, -1)
    with torch.no_grad():
        got = flex(x, position_ids=positions.to(device)).logits
        want = eager(x, position_ids=positions.to(device)).logits
    assert want.abs().max() > 1
    assert (got - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_flex_model_equals_eager_gradients(device, packed):
    flex, eager = _pair(device)
    x = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(3)).to(device)
    positions = (_positions().expand(2, -1) if packed else torch.arange(T)[None].expand(2, -1))
    positions = positions.to(device)
    plan = AttentionPlan.build(FLEX, positions, None, q_len=T, past_len=0, dtype=torch.float32)
    if packed:
        expected_backend = FLEX if flex_supports_backward(device) else "sdpa"
        assert plan.backend == expected_backend
    for model in (flex, eager):
        model(x, position_ids=positions, labels=x).loss.backward()
    grads = {n: p.grad for n, p in eager.named_parameters()}
    for name, p in flex.named_parameters():
        scale = grads[name].abs().max().item()
        assert scale > 0, name
        assert (p.grad - grads[name]).abs().max().item() <= 1e-4 * max(1.0, scale), name


def test_no_attention_across_documents():
    """Changing one document's tokens changes only that document's outputs."""
    flex, _ = _pair()
    x = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(4))
    y = x.clone()
    y[0, 9:14] = (y[0, 9:14] + 1) % 128  # the second document of the first row
    positions = _positions().expand(2, -1)
    with torch.no_grad():
        a = flex(x, position_ids=positions).logits
        b = flex(y, position_ids=positions).logits
    assert torch.equal(a[1], b[1])
    assert (a[0, 9:14] - b[0, 9:14]).abs().max() > 1e-2
    outside = torch.cat([a[0, :9] - b[0, :9], a[0, 14:] - b[0, 14:]])
    assert outside.abs().max().item() == 0.0


def test_plan_uses_flex_only_for_packed_rows_without_a_cache():
    packed = _positions()
    with torch.no_grad():
        plan = AttentionPlan.build(FLEX, packed, None, q_len=T, past_len=0, dtype=torch.float32)
        assert plan.backend == FLEX and plan.block_mask is not None and plan.mask is None
        one_doc = AttentionPlan.build(
            FLEX, torch.arange(T)[None], None, q_len=T, past_len=0, dtype=torch.float32
        )
        assert one_doc.backend == "sdpa" and one_doc.is_causal  # SDPA's causal kernel
        decode = AttentionPlan.build(
            FLEX, torch.tensor([[T]]), None, q_len=1, past_len=T, dtype=torch.float32
        )
        assert decode.backend == "sdpa"
        padded = torch.ones(1, T, dtype=torch.long)
        padded[0, :3] = 0
        assert AttentionPlan.build(
            FLEX, packed, padded, q_len=T, past_len=0, dtype=torch.float32
        ).backend == "sdpa"


def test_flex_model_generates_like_eager():
    flex, eager = _pair()
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(5))
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(flex.generate(prompt, **kw), eager.generate(prompt, **kw))


def test_backend_order():
    assert [n for n, _ in attention_backends("cuda", flash_installed=True)] == [
        "flash_attention_2", FLEX, "sdpa", "eager"]  # fmt: skip
    assert [n for n, _ in attention_backends("cuda", flash_installed=False)] == [
        FLEX, "sdpa", "eager"]  # fmt: skip
    cpu = attention_backends("cpu", flash_installed=True)
    assert [n for n, _ in cpu] == ["sdpa", "eager"] and "backward" in cpu[0][1]
    assert attention_backends("cpu", needs_grad=False)[0][0] == FLEX
    assert resolve_attn_implementation(FLEX) == FLEX
    with pytest.raises(ValueError, match="attn_implementation"):
        resolve_attn_implementation("paged")


def test_model_trained_with_flex_saves_a_stock_qwen3_folder(tmp_path):
    flex, _ = _pair()
    opt = torch.optim.SGD(flex.parameters(), lr=0.1)
    x = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(6))
    for _ in range(2):
        flex(x, position_ids=_positions().expand(2, -1), labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    flex.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert not any("attn" in key for key in config), config  # no backend in the folder
    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(stock) is Qwen3ForCausalLM
    flex.eval()
    with torch.no_grad():
        assert (flex(x).logits - stock(x).logits).abs().max().item() <= 1e-4
    reloaded = MoaiForCausalLM.from_pretrained(tmp_path, attn_implementation=FLEX)
    assert reloaded.config._attn_implementation == FLEX
