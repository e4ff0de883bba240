"""Banded SDPA for packed rows of short documents: the same attention as eager (outputs and
gradients, GQA), never across documents, and only where the band is narrow."""

from __future__ import annotations

import pytest
import torch

from moai_llm.modeling import MoaiForCausalLM, banded
from moai_llm.modeling.attention import AttentionPlan, eager_attention
from moai_llm.modeling.banded import Band, banded_sdpa

from tiny_models import tiny_config

T = 256


def _positions(lengths, seed: int = 0) -> torch.Tensor:
    """Rows of T tokens cut into documents of the given lengths (shuffled per row)."""
    rows = []
    for row in range(2):
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed + row))
        rows.append(torch.cat([torch.arange(lengths[i]) for i in order.tolist()]))
    return torch.stack(rows)


_SHORT = [3, 7, 1, 9, 12, 5, 8, 11, 2, 6, 10, 4, 13, 15, 14, 8]  # 128 tokens
LAYOUTS = {"short": _SHORT * 2, "aligned": [16] * 16, "one-medium": [40] + [8] * 27}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_banded_equals_eager_forward_and_gradients_with_gqa(layout):
    positions = _positions(LAYOUTS[layout])
    assert positions.shape == (2, T)
    band = Band.build(positions == 0)
    assert band is not None and band.window * 4 <= T
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, T, 16, generator=gen, requires_grad=True)
    k = torch.randn(2, 2, T, 16, generator=gen, requires_grad=True)
    v = torch.randn(2, 2, T, 16, generator=gen, requires_grad=True)
    reference = AttentionPlan.build("eager", positions, None, q_len=T, past_len=0,
                                    dtype=torch.float32)  # fmt: skip
    want = eager_attention(q, k, v, reference, 0.25, 0.0)
    got = banded_sdpa(q, k, v, band, 0.25, 0.0)
    assert (got - want).abs().max().item() <= 1e-5
    upstream = torch.randn(got.shape, generator=gen)
    grads_want = torch.autograd.grad(want, (q, k, v), upstream)
    grads_got = torch.autograd.grad(got, (q, k, v), upstream)
    for a, b in zip(grads_got, grads_want, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


def test_band_only_for_short_documents_and_divisible_rows():
    assert Band.build(_positions([200, 56]) == 0) is None  # long document: dense mask
    assert Band.build(_positions([7, 6, 7]) == 0) is None  # 20 tokens: no tile divides it
    band = Band.build(_positions(LAYOUTS["short"]) == 0)
    assert band.window <= T // 4
    plan = AttentionPlan.build("sdpa", _positions(LAYOUTS["short"]), None, q_len=T, past_len=0,
                               dtype=torch.float32)  # fmt: skip
    assert plan.band is not None and plan.mask is None
    eager = AttentionPlan.build("eager", _positions(LAYOUTS["short"]), None, q_len=T, past_len=0,
                                dtype=torch.float32)  # fmt: skip
    assert eager.band is None and eager.mask is not None  # eager stays the dense reference


def test_switching_the_band_off_gives_the_dense_mask(monkeypatch):
    monkeypatch.setattr(banded, "enabled", False)
    plan = AttentionPlan.build("sdpa", _positions(LAYOUTS["short"]), None, q_len=T, past_len=0,
                               dtype=torch.float32)  # fmt: skip
    assert plan.band is None and plan.mask.shape == (2, 1, T, T)


def test_sdpa_model_on_short_documents_equals_eager_and_keeps_documents_apart():
    models = {}
    for backend in ("sdpa", "eager"):
        torch.manual_seed(0)
        models[backend] = MoaiForCausalLM(tiny_config(attn_implementation=backend))
    positions = _positions(LAYOUTS["short"], seed=3)
    x = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(4))
    losses = {}
    for backend, model in models.items():
        losses[backend] = model(x, position_ids=positions, labels=x).loss
        losses[backend].backward()
    torch.testing.assert_close(losses["sdpa"], losses["eager"], rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(models["sdpa"].named_parameters(), models["eager"].parameters(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)

    # Changing the tokens of one document leaves every other token's logits unchanged.
    sdpa = models["sdpa"].eval()
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    first, end = starts[3], starts[4]
    y = x.clone()
    y[0, first:end] = (y[0, first:end] + 1) % 128
    with torch.no_grad():
        a = sdpa(x, position_ids=positions, use_cache=False).logits
        b = sdpa(y, position_ids=positions, use_cache=False).logits
    changed = (a - b).abs().amax(dim=-1)
    assert changed[0, first:end].min() > 0
    assert changed[0, :first].max() == 0 and changed[0, end:].max() == 0 and changed[1].max() == 0
