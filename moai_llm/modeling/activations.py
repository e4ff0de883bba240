"""SwiGLU feed-forward block (Qwen3's MLP): down(silu(gate(x)) * up(x)), no biases.

The seed called this activation "swiglu"; Qwen3 configs call the gate activation "silu".
Parameter names (`gate_proj`, `up_proj`, `down_proj`) are transformers' so checkpoints
interchange without renaming.

    mlp = MoaiMLP(hidden_size=1024, intermediate_size=3072)
    y = mlp(x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU-gated linear unit: silu(gate) * up."""
    return F.silu(gate) * up


class MoaiMLP(nn.Module):
    """Gated MLP with SwiGLU, hidden -> intermediate -> hidden."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))
