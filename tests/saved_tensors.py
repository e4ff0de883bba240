"""Counting what autograd keeps for backward: the tests of the memory model compare its
per-token formulas with these bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def saved_bytes(run: Callable[[], object], model, shared: Iterable[int] = (), precision: str = "fp32") -> int:
    """Bytes of the tensors autograd saves while `run()` builds its graph, each storage counted
    once, leaving out `model`'s parameters, anything shaped like one or like its transpose (the
    bf16 casts autocast makes and mm's weight.t()), and the storages in `shared` (cos/sin or a
    mask built once per forward). `precision` "bf16" runs it under CPU autocast."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()}
    shapes |= {s[::-1] for s in shapes}
    skip = params | set(shared)
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip and tuple(t.shape) not in shapes:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        run()
    return sum(saved.values())
