"""RoPE/YaRN: inverse frequencies and attention factor equal transformers' reference."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from moai_llm.modeling.rope import MoaiRotaryEmbedding, apply_rotary_pos_emb, rope_parameters

from tiny_models import tiny_config

YARN_VARIANTS = [
    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    {
        "type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 16,
        "beta_fast": 16,
        "beta_slow": 2,
    },  # fmt: skip
    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "truncate": False},
    {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32,
        "mscale": 1.0,
        "mscale_all_dim": 0.5,
    },  # fmt: skip
    {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32,
        "attention_factor": 1.3,
    },  # fmt: skip
]


@pytest.mark.parametrize("rope", YARN_VARIANTS)
@pytest.mark.parametrize("head_dim", [16, 128])
def test_yarn_matches_transformers(rope, head_dim):
    cfg = tiny_config(rope_scaling=dict(rope), head_dim=head_dim)
    ours, ours_scale = rope_parameters(cfg)
    ref, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](cfg, torch.device("cpu"))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert ours_scale == pytest.approx(ref_scale, rel=1e-12)


def test_yarn_interpolates_slow_dimensions_and_keeps_fast_ones():
    plain, _ = rope_parameters(tiny_config())
    yarn, scale = rope_parameters(tiny_config(yarn=True))
    assert torch.equal(yarn[0], plain[0])  # fastest rotation: extrapolated (unchanged)
    torch.testing.assert_close(yarn[-1], plain[-1] / 4.0)  # slowest: interpolated by factor
    assert scale == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1)


def test_linear_scaling_matches_transformers():
    cfg = tiny_config(rope_scaling={"type": "linear", "factor": 2.0})
    ours, _ = rope_parameters(cfg)
    ref, _ = ROPE_INIT_FUNCTIONS["linear"](cfg, torch.device("cpu"))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_rotation_preserves_norms_and_relative_positions():
    cfg = tiny_config()
    rope = MoaiRotaryEmbedding(cfg)
    q, k = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([[i]]), torch.float32)
        ck, sk = rope(torch.tensor([[j]]), torch.float32)
        qi, _ = apply_rotary_pos_emb(q, q[:, :2], cq, sq)
        _, kj = apply_rotary_pos_emb(k.repeat(1, 2, 1, 1), k, ck, sk)
        return (qi[:, :2] * kj).sum()

    assert score(5, 3).item() == pytest.approx(score(12, 10).item(), rel=1e-4)


def test_applying_rope_equals_transformers_bit_for_bit():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb as hf_apply

    cfg = tiny_config(yarn=True)
    positions = torch.arange(96)[None].expand(2, -1)
    q, k = torch.randn(2, 4, 96, 16), torch.randn(2, 2, 96, 16)
    ours = apply_rotary_pos_emb(q, k, *MoaiRotaryEmbedding(cfg)(positions, torch.float32))
    ref = hf_apply(q, k, *Qwen3RotaryEmbedding(cfg)(q, positions))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
