"""Rotary position embeddings (RoPE), with linear scaling and YaRN.

YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models")
extends a model trained on `original_max_position_embeddings` tokens by `factor`:
- per frequency, interpolate (divide by `factor`) the slow dimensions whose wavelength exceeds
  the trained context, keep (extrapolate) the fast ones, and blend linearly in between; the
  blend region is the dimensions that rotate between `beta_fast` (default 32) and `beta_slow`
  (default 1) times over the trained context;
- scale the attention logits by an "attention temperature": cos/sin are multiplied by
  `0.1 * ln(factor) + 1` (so q.k is scaled by its square).
This follows transformers' `_compute_yarn_parameters` exactly (parity is a test), including
the `truncate`, `attention_factor`, `mscale` and `mscale_all_dim` options.

The rotation uses the half-split layout (`rotate_half`) of HF/Qwen checkpoints, so weights
trained here run unchanged in transformers, vLLM and llama.cpp.

    rope = MoaiRotaryEmbedding(config)
    cos, signed_sin = rope(position_ids, dtype=torch.bfloat16)  # [B, T, head_dim] each
    q, k = apply_rotary_pos_emb(q, k, cos, signed_sin)          # q, k: [B, heads, T, head_dim]
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(
    dim: int,
    base: float,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
) -> torch.Tensor:
    """YaRN inverse frequencies: interpolated below the ramp, extrapolated above it.

    yarn_inv_freq(128, 1e6, 4.0, 32768)   # [64] float32
    """

    def correction_dim(num_rotations: float) -> float:
        # The dimension index whose wavelength fits `num_rotations` times in the trained context.
        return (
            dim * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))
        ) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (factor * pos_freqs)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 = fast dimension kept as trained, 0 = slow dimension interpolated
    return interpolation * (1 - keep) + extrapolation * keep


def rope_parameters(config) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] float32, attention scaling) for the config's `rope_parameters`."""
    rope = config.rope_parameters or {}
    base = float(rope.get("rope_theta", 10000.0))
    dim = config.head_dim
    kind = rope.get("rope_type", "default")
    if kind == "yarn":
        factor = rope.get("factor")
        original = rope["original_max_position_embeddings"]
        if factor is None:
            factor = config.max_position_embeddings / original
        attention_factor = rope.get("attention_factor")
        if attention_factor is None:
            mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
            if mscale and mscale_all_dim:
                attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(
                    factor, mscale_all_dim
                )
            else:
                attention_factor = _yarn_mscale(factor)
        inv_freq = yarn_inv_freq(
            dim,
            base,
            factor,
            original,
            beta_fast=rope.get("beta_fast") or 32,
            beta_slow=rope.get("beta_slow") or 1,
            truncate=rope.get("truncate", True),
        )
        return inv_freq, float(attention_factor)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if kind == "linear":
        inv_freq = inv_freq / rope["factor"]
    return inv_freq, 1.0


class MoaiRotaryEmbedding(nn.Module):
    """Computes cos/sin tables for the positions of one forward (shared by all layers)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        inv_freq, self.attention_scaling = rope_parameters(config)
        # Not persistent: derived from the config, absent from checkpoints (as in transformers).
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_inv_freq(self) -> None:
        """Recompute the table (after the model was materialised from the meta device)."""
        inv_freq, self.attention_scaling = rope_parameters(self.config)
        with torch.no_grad():
            self.inv_freq.copy_(inv_freq.to(self.inv_freq.device))

    @torch.no_grad()
    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) [B, T, head_dim] for `apply_rotary_pos_emb`."""
        # fp32 angles: bf16 positions past 256 would round to the wrong token.
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            freqs = position_ids[..., None].float() * self.inv_freq.float()
            cos = freqs.cos() * self.attention_scaling
            sin = freqs.sin() * self.attention_scaling
            cos = torch.cat((cos, cos), dim=-1)
            # The sign of rotate_half lives in the table, so applying RoPE is a roll (see below).
            sin = torch.cat((-sin, sin), dim=-1)
        return cos.to(dtype), sin.to(dtype)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [B, Hq, T, D] and k [B, Hkv, T, D] by the tables [B, T, D] of the embedding.

    Equal to HF's `x * cos + rotate_half(x) * sin` with rotate_half(x) = cat(-x2, x1): rolling
    x by D/2 gives cat(x2, x1) and the table holds cat(-sin, sin). One roll instead of two
    slices, a negation and a cat, forward and backward.
    """
    cos, signed_sin = cos.unsqueeze(1), signed_sin.unsqueeze(1)
    half = q.shape[-1] // 2
    q_out = q * cos + torch.roll(q, half, dims=-1) * signed_sin
    k_out = k * cos + torch.roll(k, half, dims=-1) * signed_sin
    return q_out, k_out
