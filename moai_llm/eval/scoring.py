"""Score packed held-out text: summed negative log-likelihood, bits per byte, perplexity.

`score_rows` runs the model's own forward on `text.EvalText` rows with the fused chunked
cross-entropy (`moai_llm.losses.fused_linear_cross_entropy`) summed rather than averaged, so
logits exist one chunk of tokens at a time and memory stays bounded at any vocabulary size.
It is the function training calls every `--eval-steps`, across processes:

- each process scores its share of the rows (row i goes to process i % world_size), and every
  process runs the same number of forward passes (one with nothing to score when it has run
  out of rows), so the collectives of DDP/FSDP inside the forward stay in step;
- `all_sum(list of floats) -> list of floats` sums the partial totals over processes
  (default: `torch.distributed.all_reduce` when a process group is up, else nothing);
- the loss function the run trains with (focal, label smoothing, ...) is swapped for plain
  summed cross-entropy for the duration of the call and restored after, with the model's
  train/eval mode.

Metrics: bits per byte = nll_nats / (ln 2 x bytes); bytes per token = bytes / tokens; token
perplexity = exp(nll_nats / tokens).

    >>> import tempfile, pathlib
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.modeling import MoaiForCausalLM
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.eval.text import pack_texts
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20,
    ...                       pathlib.Path(tempfile.mkdtemp()) / "tok", vocab_size=300)
    >>> model = MoaiForCausalLM(MoaiConfig.from_preset("tiny", vocab_size=300))
    >>> scores = score_rows(model, pack_texts(["hello world", "the quick brown fox"], tok, 32))
    >>> sorted(scores), scores["bytes"]
    (['bits_per_byte', 'bytes', 'bytes_per_token', 'nll_nats', 'token_perplexity', 'tokens'], 30)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from moai_llm.errors import MoaiInputError

AllSum = Callable[[list[float]], Sequence[float]]


def text_metrics(nll_nats: float, tokens: int, n_bytes: int) -> dict[str, float | int]:
    """Bits per byte, bytes per token and token perplexity from summed totals.

    >>> m = text_metrics(nll_nats=693.147, tokens=400, n_bytes=1000)
    >>> round(m["bits_per_byte"], 4), m["bytes_per_token"], round(m["token_perplexity"], 3)
    (1.0, 2.5, 5.657)
    """
    return {
        "nll_nats": nll_nats, "tokens": int(tokens), "bytes": int(n_bytes),
        "bits_per_byte": nll_nats / (math.log(2) * n_bytes) if n_bytes else float("nan"),
        "bytes_per_token": n_bytes / tokens if tokens else float("nan"),
        "token_perplexity": math.exp(min(nll_nats / tokens, 700.0)) if tokens else float("nan"),
    }


def _summed_cross_entropy(hidden, weight, labels, num_items_in_batch=None, *, chunk_size: int):
    from moai_llm.losses import fused_linear_cross_entropy

    return fused_linear_cross_entropy(hidden, weight, labels, chunk_size=chunk_size, num_items_in_batch=1)


def _unwrap(model: Any) -> Any:
    """The moai model inside DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    inner = model
    for _ in range(4):
        nxt = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if nxt is None:
            break
        inner = nxt
    return inner


def _process_group(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distributed_sum(device: Any) -> AllSum:
    """`all_sum` over the default process group (float64 all-reduce on `device`)."""
    import torch
    import torch.distributed as dist

    def all_sum(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    return all_sum


def score_rows(model: Any, rows: Any, micro_batch: int = 8, *, all_sum: AllSum | None = None,
               rank: int | None = None, world_size: int | None = None,
               chunk_size: int | None = None) -> dict[str, float | int]:
    """Summed NLL (nats), tokens and bytes of `rows` (an `EvalText`), plus the metrics.

    `rank`/`world_size` default to torch.distributed's (0/1 without a process group). The
    model may be wrapped (DDP, FSDP2, torch.compile); its forward must take `position_ids`
    and `labels` and call `loss_fn` as moai's `MoaiForCausalLM` does.
    """
    import torch

    inner = _unwrap(model)
    if not hasattr(type(inner), "loss_fn"):
        raise MoaiInputError(f"bits per byte needs moai's model class (MoaiForCausalLM), got {type(inner).__name__}",
                             hint="load a Qwen3 folder with moai_llm.modeling.MoaiForCausalLM.from_pretrained")
    if micro_batch < 1:
        raise MoaiInputError(f"--batch-size {micro_batch}: must be at least 1")
    rank, world = _process_group(rank, world_size)
    device = next(inner.parameters()).device
    if all_sum is None:
        all_sum = distributed_sum(device) if world > 1 else list
    chunk = chunk_size or getattr(inner.config, "loss_chunk_size", None) or 4096
    mine = list(range(rank, len(rows), world))
    per_process = -(-len(rows) // world)
    steps = -(-per_process // micro_batch)  # the same on every process
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    previous_loss, was_training = inner.__dict__.get("_loss_fn"), model.training
    inner.loss_fn = functools.partial(_summed_cross_entropy, chunk_size=chunk)
    try:
        model.eval()
        with torch.no_grad():
            for step in range(steps):
                idx = mine[step * micro_batch:(step + 1) * micro_batch]
                labels = rows.labels[idx] if idx else rows.labels[:1] * 0 - 100  # nothing to score
                take = idx or [0]
                out = model(input_ids=torch.from_numpy(rows.input_ids[take]).to(device, torch.long),
                            position_ids=torch.from_numpy(rows.position_ids[take]).to(device, torch.long),
                            labels=torch.from_numpy(labels).to(device, torch.long), use_cache=False)
                total += out.loss.double()
                tokens += int((labels != -100).sum())
    finally:
        inner.loss_fn = previous_loss
        model.train(was_training)
    nll, n_tokens = all_sum([float(total.item()), float(tokens)])
    return text_metrics(float(nll), int(round(n_tokens)), rows.bytes)
