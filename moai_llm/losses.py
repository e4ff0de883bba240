"""Losses. (First version; the training work replaces the body with a chunked fused kernel.)

Contract used by the model: `fused_linear_cross_entropy(hidden [N,H], weight [V,H], labels [N],
chunk_size=..., ignore_index=-100, num_items_in_batch=None)` returns the summed loss divided by
`num_items_in_batch` when given, else the mean over labels != ignore_index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 4096,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    logits = hidden.float() @ weight.float().t()
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    if num_items_in_batch is None:
        num_items_in_batch = (labels != ignore_index).sum().clamp(min=1)
    return total / num_items_in_batch
