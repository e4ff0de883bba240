"""Sequence log-probabilities of packed preference rows, from hidden states, without full logits.

A preference loss needs, per document (a pair's chosen or rejected sequence), the sum of
log p(token) over its answer tokens. `token_logprobs` computes log p of each labelled token
from the final hidden states [N, H] and the lm_head weight [V, H] one chunk of labelled
tokens at a time, as `moai_llm.losses` does for cross-entropy: the [N x V] logits never exist.
Unlike cross-entropy, the gradient that reaches each token depends on its document's share of
the pair loss, which is only known in backward; so backward recomputes each chunk's logits
(one more [chunk, H] x [H, V] product) instead of keeping them, and turns
d log p_y / d z = onehot(y) - softmax(z), scaled per token, into grad_hidden and grad_weight.
Saved between the passes: the log-sum-exp per labelled token (4 bytes each). Each pass holds
one [chunk, V] buffer at a time (softmax and its gradient are formed in place). During backward
the hidden-state gradient and (when lm_head trains) its fp32 gradient exist as they do for the
fused cross-entropy, so the memory model's estimate of an SFT step over the same packed rows
holds for a preference step (a row holds both sequences of its pairs; the reference's
log-probs are precomputed, reference.py, so no reference weights are held).

Packed rows (position_ids restarting at 0 per document, data/preference.py) are summed per
document with `document_logprobs`; `PairLayout` says which document is which pair's chosen or
rejected sequence, from the rows' pair_index / pair_role columns.

    >>> import torch
    >>> h, w = torch.randn(6, 8), torch.randn(11, 8)
    >>> labels = torch.tensor([[-100, 3, 4, -100, 5, 6]]); pos = torch.tensor([[0, 1, 2, 0, 1, 2]])
    >>> sums, counts = document_logprobs(h, w, labels, pos)
    >>> counts.tolist()
    [2, 2]
    >>> ref = torch.log_softmax(h @ w.T, -1)
    >>> torch.allclose(sums[0], ref[0, 3] + ref[1, 4])
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moai_llm.losses import _matmul_dtype


def _chunks(hidden, weight, idx, chunk_size, mm_dtype):
    """(rows, fp32 logits) of the labelled rows `idx`, chunk by chunk, multiplied in `mm_dtype`
    (forward decides it from autocast; backward, outside autocast, reuses it)."""
    acc_dtype = torch.promote_types(mm_dtype, torch.float32)
    w = weight.to(mm_dtype)
    for start in range(0, idx.numel(), chunk_size):
        rows = idx[start:start + chunk_size]
        h = hidden.index_select(0, rows).to(mm_dtype)
        yield start, rows, h, w, (h @ w.t()).to(acc_dtype)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, idx, targets, chunk_size):
        out = torch.empty(idx.numel(), dtype=torch.float32 if hidden.dtype != torch.float64 else torch.float64,
                          device=hidden.device)
        lse = torch.empty_like(out)
        mm_dtype = _matmul_dtype(hidden, weight)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, _, _, _, logits in _chunks(hidden, weight, idx, chunk_size, mm_dtype):
                end = start + logits.shape[0]
                picked = logits.gather(1, targets[start:end, None]).squeeze(1)
                # log-sum-exp in the chunk's own buffer (torch.logsumexp would allocate a second
                # [chunk, V] tensor for exp(z - max), doubling the step's largest transient)
                z_max = logits.amax(1)
                lse[start:end] = logits.sub_(z_max[:, None]).exp_().sum(1).log_().add_(z_max)
                out[start:end] = picked - lse[start:end]
                logits = None
        ctx.save_for_backward(hidden, weight, idx, targets, lse)
        ctx.chunk_size, ctx.mm_dtype = chunk_size, mm_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, idx, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.promote_types(ctx.mm_dtype, torch.float32),
                             device=weight.device) if need_w else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start, rows, h, w, logits in _chunks(hidden, weight, idx, ctx.chunk_size, ctx.mm_dtype):
                end = start + logits.shape[0]
                g = grad_out[start:end].to(logits.dtype)
                # d(log p_y)/dz = onehot(y) - softmax(z), times the incoming gradient per token
                grad_z = logits.sub_(lse[start:end, None]).exp_().mul_(-g[:, None])
                grad_z.scatter_add_(1, targets[start:end, None], g[:, None])
                grad_z = grad_z.to(ctx.mm_dtype)
                if need_h:
                    grad_h.index_copy_(0, rows, (grad_z @ w).to(grad_h.dtype))
                if need_w and grad_z.dtype == grad_w.dtype:
                    grad_w.addmm_(grad_z.t(), h)  # accumulated in place: no [V, H] temporary
                elif need_w:
                    grad_w.add_((grad_z.t() @ h).to(grad_w.dtype))
                logits = grad_z = None  # one chunk at a time
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096,
                   ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(labels[i]) under softmax(hidden[i] @ weight.T) for the labelled rows, and their indices.

    hidden [N, H], weight [V, H], labels [N] (already aligned: row i predicts labels[i]).
    Returns (logp [n] fp32, idx [n]) for the n rows whose label is not `ignore_index`.
    """
    labels = labels.reshape(-1).to(hidden.device)
    idx = (labels != ignore_index).nonzero().squeeze(1)
    targets = labels.index_select(0, idx).long()
    return _TokenLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, idx, targets, chunk_size), idx


def shifted_labels(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the hidden states that predict them: position t predicts t + 1, and the
    first token of a document (position id 0) is never predicted from the document before it."""
    pad = torch.nn.functional.pad
    shifted = pad(labels, (0, 1), value=-100)[:, 1:]
    next_pos = pad(position_ids, (0, 1), value=0)[:, 1:]
    return shifted.masked_fill(next_pos == 0, -100)


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """A number per token, counting documents (runs starting at position id 0) across the batch."""
    return (position_ids.reshape(-1) == 0).cumsum(0) - 1


def document_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor,
                      chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of answer-token log-probs, number of answer tokens) per document of packed rows.

    hidden [B, T, H] or [B*T, H]; labels and position_ids [B, T] (labels unshifted: -100 where
    there is no loss). Documents are numbered in row order, each row's padding tail included
    (its sum and count are 0).
    """
    aligned = shifted_labels(labels, position_ids.to(labels.device))
    seg = segment_ids(position_ids).to(hidden.device)
    num_segments = int(seg[-1]) + 1 if seg.numel() else 0
    logp, idx = token_logprobs(hidden.reshape(-1, hidden.shape[-1]), weight, aligned, chunk_size)
    where = seg.index_select(0, idx)
    sums = torch.zeros(num_segments, dtype=logp.dtype, device=logp.device).index_add(0, where, logp)
    counts = torch.bincount(where, minlength=num_segments)
    return sums, counts


@dataclass
class PairLayout:
    """Where each pair of a batch is: chosen/rejected document numbers (as `document_logprobs`
    counts them) and the pair's number in the dataset (to look up stored reference log-probs)."""

    chosen: torch.Tensor  # [P] document number of each pair's chosen sequence
    rejected: torch.Tensor  # [P] ... and of its rejected sequence
    pair_ids: torch.Tensor  # [P] pair_index of each pair

    @classmethod
    def from_rows(cls, position_ids: torch.Tensor, pair_index: list[list[int]], pair_role: list[list[int]]) -> PairLayout:
        """From a batch's position_ids [B, T] and its rows' pair_index / pair_role lists."""
        per_row = (position_ids == 0).sum(1).tolist()
        chosen: dict[int, int] = {}
        rejected: dict[int, int] = {}
        first = 0
        for r, (pairs, roles) in enumerate(zip(pair_index, pair_role, strict=True)):
            if len(pairs) > per_row[r]:
                raise ValueError(f"row {r}: {len(pairs)} documents listed but {per_row[r]} found in position_ids")
            for k, (pair, role) in enumerate(zip(pairs, roles, strict=True)):
                (chosen if role == 0 else rejected)[int(pair)] = first + k
            first += per_row[r]
        if chosen.keys() != rejected.keys():
            raise ValueError(f"pairs without both sequences in the batch: {sorted(chosen.keys() ^ rejected.keys())[:5]}")
        ids = list(chosen)
        device = position_ids.device
        return cls(torch.tensor([chosen[i] for i in ids], device=device),
                   torch.tensor([rejected[i] for i in ids], device=device), torch.tensor(ids, device=device))


@dataclass
class PairLogps:
    """Per pair of a batch: summed answer log-probs and answer lengths, chosen and rejected."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    pair_ids: torch.Tensor


def pair_logprobs(hidden, weight, labels, position_ids, pair_index, pair_role, chunk_size: int = 4096) -> PairLogps:
    """`document_logprobs` gathered into chosen and rejected per pair."""
    sums, counts = document_logprobs(hidden, weight, labels, position_ids, chunk_size)
    layout = PairLayout.from_rows(position_ids, pair_index, pair_role)
    c, r = layout.chosen.to(sums.device), layout.rejected.to(sums.device)
    return PairLogps(sums[c], sums[r], counts[c], counts[r], layout.pair_ids)


def unwrap(model):
    """The causal LM under DDP/FSDP and peft wrappers (its LoRA layers stay in place)."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def model_pair_logprobs(model, batch: dict, chunk_size: int = 4096) -> PairLogps:
    """Run `model`'s decoder on a batch of packed preference rows and return its PairLogps.

    `batch`: input_ids, labels, position_ids [B, T] tensors and pair_index, pair_role (lists per
    row). The model must keep packed documents apart given position_ids (moai's MoaiForCausalLM
    does on every attention backend); its lm_head is applied chunk by chunk here.
    """
    lm = unwrap(model)
    device = lm.lm_head.weight.device
    position_ids = batch["position_ids"].to(device)
    out = lm.model(input_ids=batch["input_ids"].to(device), position_ids=position_ids, use_cache=False)
    return pair_logprobs(out.last_hidden_state, lm.lm_head.weight, batch["labels"].to(device), position_ids,
                         batch["pair_index"], batch["pair_role"], chunk_size)
