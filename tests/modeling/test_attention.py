"""Attention over packed documents never crosses a document boundary, on every backend here;
backends agree; the plan keeps the unpacked path on plain `is_causal`."""

from __future__ import annotations

import pytest
import torch

from moai_llm.modeling import MoaiForCausalLM
from moai_llm.modeling.attention import (
    AttentionPlan,
    flash_attn_available,
    resolve_attn_implementation,
)

from tiny_models import tiny_config

BACKENDS = [
    "sdpa",
    "eager",
    pytest.param(
        "flash_attention_2",
        marks=pytest.mark.skipif(not flash_attn_available(), reason="flash-attn needs CUDA"),
    ),
]
DOC_LENGTHS = (7, 12, 9)


def _model(backend: str, yarn: bool = False) -> MoaiForCausalLM:
    torch.manual_seed(0)
    model = MoaiForCausalLM(tiny_config(yarn=yarn, attn_implementation=backend)).eval()
    if backend == "flash_attention_2" and flash_attn_available():
        model = model.to("cuda", torch.bfloat16)
    return model


def _tolerance(backend: str, logits: torch.Tensor) -> float:
    """1e-4 in fp32; on the GPU flash-attn runs in bf16 (8-bit mantissa): 2% of the logit scale."""
    return 1e-4 if backend != "flash_attention_2" else 2e-2 * logits.float().abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("yarn", [False, True], ids=["rope", "yarn"])
def test_packed_documents_equal_each_document_alone(backend, yarn):
    model = _model(backend, yarn)
    device = model.device
    gen = torch.Generator().manual_seed(2)
    docs = [torch.randint(0, 128, (1, n), generator=gen).to(device) for n in DOC_LENGTHS]
    packed = torch.cat(docs, dim=1)
    positions = torch.cat([torch.arange(n) for n in DOC_LENGTHS])[None].to(device)
    with torch.no_grad():
        together = model(packed, position_ids=positions).logits
        alone = torch.cat([model(d).logits for d in docs], dim=1)
    tol = _tolerance(backend, alone)
    assert (together.float() - alone.float()).abs().max().item() <= tol
    # Without the restarts the same row is one long document and the logits differ.
    with torch.no_grad():
        as_one = model(packed).logits
    assert (as_one.float() - alone.float()).abs().max().item() > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_rows_in_a_batch_keep_their_own_boundaries(backend):
    model = _model(backend)
    device = model.device
    gen = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 128, (2, 20), generator=gen).to(device)
    positions = torch.tensor([list(range(8)) + list(range(12)), list(range(20))]).to(device)
    with torch.no_grad():
        batched = model(rows, position_ids=positions).logits
        first = torch.cat([model(rows[:1, :8]).logits, model(rows[:1, 8:]).logits], dim=1)
        second = model(rows[1:]).logits
    tol = _tolerance(backend, second)
    assert (batched[:1].float() - first.float()).abs().max().item() <= tol
    assert (batched[1:].float() - second.float()).abs().max().item() <= tol


def test_sdpa_and_eager_agree_with_and_without_packing():
    sdpa, eager = _model("sdpa"), _model("eager")
    x = torch.randint(0, 128, (2, 30), generator=torch.Generator().manual_seed(4))
    packed_positions = torch.cat([torch.arange(10), torch.arange(20)])[None].expand(2, -1)
    with torch.no_grad():
        for positions in (None, packed_positions):
            a = sdpa(x, position_ids=positions).logits
            b = eager(x, position_ids=positions).logits
            assert (a - b).abs().max().item() <= 1e-4


def test_plan_uses_plain_causal_attention_when_nothing_restarts():
    positions = torch.arange(16)[None].expand(3, -1)
    plan = AttentionPlan.build("sdpa", positions, None, q_len=16, past_len=0, dtype=torch.float32)
    assert plan.is_causal and plan.mask is None
    ones = torch.ones(3, 16, dtype=torch.long)
    plan = AttentionPlan.build("sdpa", positions, ones, q_len=16, past_len=0, dtype=torch.float32)
    assert plan.is_causal and plan.mask is None  # an all-ones padding mask is dropped


def test_plan_for_packed_rows_is_block_diagonal_and_causal():
    positions = torch.tensor([[0, 1, 2, 0, 1]])
    plan = AttentionPlan.build("eager", positions, None, q_len=5, past_len=0, dtype=torch.float32)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]],
        dtype=torch.bool,
    )
    assert not plan.is_causal and torch.equal(plan.mask[0, 0], expected)


def test_flash_falls_back_to_sdpa_off_cuda_or_in_fp32():
    positions = torch.arange(8)[None]
    plan = AttentionPlan.build(
        "flash_attention_2", positions, None, q_len=8, past_len=0, dtype=torch.float32
    )
    assert plan.backend == "sdpa"


def test_auto_resolves_to_an_available_backend():
    expected = "sdpa"  # a CPU machine: flex has no CPU backward, training takes SDPA
    if torch.cuda.is_available():
        expected = "flash_attention_2" if flash_attn_available() else "flex_attention"
    assert resolve_attn_implementation("auto") == expected
    assert resolve_attn_implementation(None) == resolve_attn_implementation("auto")
    assert resolve_attn_implementation("eager") == "eager"
    model = MoaiForCausalLM(tiny_config(attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def _reference_flash_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    """flash_attn_func semantics ([B, T, H, D], native GQA) written with SDPA, for CPU tests."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=causal, scale=softmax_scale, enable_gqa=True,
    )  # fmt: skip
    return out.transpose(1, 2)


def _reference_flash_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0,
                            softmax_scale=None, causal=False):  # fmt: skip
    """flash_attn_varlen_func semantics: [total, H, D] tokens, documents given by cu_seqlens."""
    assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
    assert max_q == int((cu_q[1:] - cu_q[:-1]).max())
    out = torch.empty_like(q)
    bounds = cu_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        out[start:end] = _reference_flash_func(
            q[None, start:end], k[None, start:end], v[None, start:end], 0.0, softmax_scale, causal
        )[0]
    return out


@pytest.fixture
def flash_glue_on_cpu(monkeypatch):
    """Route the flash-attn backend to reference kernels so moai's glue (cu_seqlens, layouts,
    GQA, decoding) runs on a CPU-only machine."""
    from moai_llm.modeling import attention

    calls = []

    def record(fn):
        return lambda *a, **kw: calls.append(fn.__name__) or fn(*a, **kw)

    monkeypatch.setattr(attention, "flash_attn_func", record(_reference_flash_func))
    monkeypatch.setattr(attention, "flash_attn_varlen_func", record(_reference_flash_varlen))
    monkeypatch.setattr(attention, "flash_usable", lambda device, dtype: True)
    return calls


def test_flash_backend_glue_packs_documents_like_each_document_alone(flash_glue_on_cpu):
    model = _model("flash_attention_2")
    sdpa = _model("sdpa")
    gen = torch.Generator().manual_seed(5)
    rows = torch.randint(0, 128, (2, 28), generator=gen)
    positions = torch.stack([torch.cat([torch.arange(n) for n in DOC_LENGTHS]), torch.arange(28)])
    plan = AttentionPlan.build(
        "flash_attention_2", positions, None, q_len=28, past_len=0, dtype=torch.float32
    )
    assert plan.backend == "flash_attention_2"
    assert plan.cu_seqlens.tolist() == [0, 7, 19, 28, 56] and plan.max_seqlen == 28
    with torch.no_grad():
        flash = model(rows, position_ids=positions).logits
        reference = sdpa(rows, position_ids=positions).logits
    assert (flash - reference).abs().max().item() <= 1e-4
    assert flash_glue_on_cpu == ["_reference_flash_varlen"] * 2  # one call per layer


def test_flash_backend_glue_generates_like_sdpa(flash_glue_on_cpu):
    model, sdpa = _model("flash_attention_2"), _model("sdpa")
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(6))
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kw), sdpa.generate(prompt, **kw))
    assert flash_glue_on_cpu and set(flash_glue_on_cpu) == {"_reference_flash_func"}


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_prefill_in_chunks_onto_the_cache_equals_one_pass(backend):
    model = _model(backend, yarn=True)
    x = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        whole = model(x, use_cache=False).logits
        first = model(x[:, :25], use_cache=True)
        rest = model(x[:, 25:], cache=first.cache, use_cache=True)
    assert rest.cache.get_seq_length() == 40
    assert (torch.cat([first.logits, rest.logits], 1) - whole).abs().max().item() <= 1e-4
