"""Loaded means whole: the checks a model's weights pass before moai uses or writes them.

- `non_finite_tensor(named)`: the first of `(name, tensor)` pairs holding NaN or inf (None when
  all are finite); training calls it before it writes a checkpoint or final_model/, loaders
  after they read a folder's weights.

    >>> import torch
    >>> non_finite_tensor([("a", torch.ones(2)), ("b", torch.tensor([1.0, float("nan")]))])
    'b'
    >>> non_finite_tensor([("a", torch.ones(2))]) is None
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def non_finite_tensor(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor with a NaN/inf value (a DTensor is checked
    on its local shard), or None."""
    import torch

    for name, tensor in named:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if torch.is_floating_point(local) and not bool(torch.isfinite(local).all()):
            return name
    return None
