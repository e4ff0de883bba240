"""MoaiRMSNorm equals transformers' Qwen3RMSNorm (fp32 statistics) in fp32 and bf16."""

from __future__ import annotations

import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from moai_llm.modeling.normalization import MoaiRMSNorm


def _pair(dim=64):
    ours, ref = MoaiRMSNorm(dim, eps=1e-6), Qwen3RMSNorm(dim, eps=1e-6)
    with torch.no_grad():
        w = torch.randn(dim)
        ours.weight.copy_(w)
        ref.weight.copy_(w)
    return ours, ref


def test_matches_reference_in_fp32():
    ours, ref = _pair()
    x = torch.randn(3, 7, 64) * 5
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)


def test_matches_reference_in_bf16_and_keeps_dtype():
    ours, ref = _pair()
    ours, ref = ours.to(torch.bfloat16), ref.to(torch.bfloat16)
    x = (torch.randn(3, 7, 64) * 300).to(torch.bfloat16)  # large values: fp32 variance matters
    y = ours(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)


def test_gradients_match_reference():
    ours, ref = _pair()
    x1 = torch.randn(2, 5, 64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours(x1).square().sum().backward()
    ref(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_no_grad_and_grad_paths_agree_and_weight_only_grads_work():
    ours, _ = _pair()
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        plain = ours(x)
    torch.testing.assert_close(ours(x), plain, rtol=1e-6, atol=1e-6)
    ours(x).sum().backward()  # input without grad: only the weight gets one
    assert ours.weight.grad is not None and ours.weight.grad.shape == (64,)
