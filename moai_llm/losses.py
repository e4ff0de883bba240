"""Training losses for causal LMs: cross-entropy, focal loss, label smoothing and their weighted
mix (the seed's `multi_objective`), all averaged over the tokens that carry loss.

Two forms of every loss:
- from hidden states (`fused_linear_cross_entropy`, `fused_linear_loss`): the model hands over
  its final hidden states [N, H] and the lm_head weight [V, H]; logits are made one chunk of
  labelled tokens at a time, so the [N x V] logits never exist. Why: at vocab 122k and 4k tokens
  the fp32 logits are 1.9 GiB, and `F.cross_entropy` keeps two more copies of that size (the
  saved log-softmax and its gradient). Per chunk we compute the logits in fp32, the loss and
  d loss / d logits in closed form in the same buffer, turn that into grad_hidden (stored) and
  grad_weight (accumulated) at once and drop the chunk; backward only scales the stored
  gradients by grad_output. This is the "fused linear cross-entropy" technique of Liger-Kernel.
- from logits that already exist (`chunked_cross_entropy_loss`, `logits_loss`): the seed's API.
  Same closed-form gradient per chunk, written straight into the logits' gradient, so nothing
  of size [N x V] is kept besides the logits and their gradient.

Every objective is one per-token formula, L = w_ce*CE + w_focal*Focal + w_smooth*Smoothed,
with a closed-form gradient (see `_loss_and_grad_`). The result is sum(L over labelled tokens)
divided by `num_items_in_batch` when given (the trainer's global count across gradient
accumulation and processes, so micro-batches of different sizes weigh tokens equally), else by
the number of labelled tokens here.

    loss_fn = create_loss_function({"type": "focal", "params": {"gamma": 2.0}})
    loss = loss_fn(hidden, model.lm_head.weight, labels)          # fused, from hidden states
    loss = loss_fn.on_logits(logits, labels)                       # on existing logits
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from moai_llm.errors import MoaiInputError


@dataclass(frozen=True)
class Objective:
    """Weights and knobs of the per-token loss w_ce*CE + w_focal*Focal + w_smooth*Smoothed."""

    ce_weight: float = 1.0  # plain cross-entropy -log p_y
    focal_weight: float = 0.0  # -alpha * (1 - p_y)^gamma * log p_y (Lin et al. 2017)
    smooth_weight: float = 0.0  # cross-entropy against (1-eps)*onehot + eps/V (as F.cross_entropy)
    focal_gamma: float = 2.0
    focal_alpha: float = 1.0
    smoothing: float = 0.0


CROSS_ENTROPY = Objective()


def _loss_and_grad_(
    logits: torch.Tensor,
    targets: torch.Tensor,
    obj: Objective,
    grad_scale: float | torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed loss of fp32 `logits` [C, V]; leaves grad_scale * d(sum)/d(logits) in `logits`.

    With s = softmax(z), p = s_y: dCE/dz = s - onehot, dSmoothed/dz = s - (1-eps)onehot - eps/V,
    dFocal/dz = c * (s - onehot) with c = alpha*((1-p)^g - g*(1-p)^(g-1) * p*log p). So every
    mix is a*s - b*onehot - d per row: two in-place passes over the buffer, no extra [C, V]
    tensor. grad_scale=None computes the loss only (the buffer is left as garbage). Rows where
    `mask` is False (targets there must be valid indices) get zero loss and zero gradient.
    """
    vocab = logits.shape[1]
    z_y = logits.gather(1, targets[:, None]).squeeze(1)
    smooth = obj.smooth_weight != 0 and obj.smoothing != 0
    z_sum = logits.sum(1) if smooth else None
    z_max = logits.amax(1, keepdim=True)
    exp = logits.sub_(z_max).exp_()  # in place: the buffer now holds exp(z - max)
    sum_exp = exp.sum(1)
    lse = sum_exp.log() + z_max.squeeze(1)
    logp_y = z_y - lse
    loss = torch.zeros_like(lse)
    a = torch.zeros_like(lse)  # coefficient of softmax per row
    b = torch.zeros_like(lse)  # coefficient of onehot per row
    d = 0.0  # constant subtracted from every logit gradient
    if obj.ce_weight:
        loss -= obj.ce_weight * logp_y
        a += obj.ce_weight
        b += obj.ce_weight
    if obj.smooth_weight:
        eps = obj.smoothing
        row = lse - (1 - eps) * z_y
        if smooth:
            row = row - (eps / vocab) * z_sum
        loss += obj.smooth_weight * row
        a += obj.smooth_weight
        b += obj.smooth_weight * (1 - eps)
        d += obj.smooth_weight * eps / vocab
    if obj.focal_weight:
        gamma, alpha = obj.focal_gamma, obj.focal_alpha
        one_minus_p = -torch.expm1(logp_y)  # accurate when p is close to 1
        modulator = one_minus_p.pow(gamma)
        loss -= obj.focal_weight * alpha * modulator * logp_y
        # at p == 1 the second term is 0 * inf for gamma < 1; its limit is 0
        safe = one_minus_p.clamp(min=torch.finfo(one_minus_p.dtype).tiny)
        second = torch.where(
            one_minus_p > 0, gamma * safe.pow(gamma - 1) * logp_y.exp() * logp_y, 0.0
        )
        c = obj.focal_weight * alpha * (modulator - second)
        a += c
        b += c
    if mask is not None:
        loss = torch.where(mask, loss, 0.0)
        a, b = a * mask, b * mask
    if grad_scale is not None:
        exp.mul_((a * grad_scale / sum_exp)[:, None])  # a * softmax, scaled
        if d:
            exp.sub_(d * grad_scale if mask is None else (d * grad_scale) * mask[:, None])
        exp.scatter_add_(1, targets[:, None], (-b * grad_scale)[:, None])
    return loss.sum()


def _denominator(valid_count: int, num_items_in_batch, device) -> float | torch.Tensor:
    if num_items_in_batch is None:
        return float(max(valid_count, 1))
    if isinstance(num_items_in_batch, torch.Tensor):
        return num_items_in_batch.to(device=device, dtype=torch.float32).clamp(min=1)
    return float(max(num_items_in_batch, 1))


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """fp32 unless autocast is on (then its dtype, as F.linear would use); softmax stays fp32."""
    device = hidden.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)


def _fused_pass(hidden, weight, labels, obj, chunk_size, ignore_index, denom, need_h, need_w):
    """Loss over labelled rows of hidden [N, H]; grads of hidden/weight when asked for."""
    mm_dtype = _matmul_dtype(hidden, weight)
    acc_dtype = torch.promote_types(mm_dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    valid = (labels != ignore_index).nonzero().squeeze(1)  # chunks hold labelled tokens only
    need_grad = need_h or need_w
    scale = 1.0 / denom if need_grad else None
    grad_h = torch.zeros_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
    total = torch.zeros((), dtype=acc_dtype, device=hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):
        w = weight.to(mm_dtype)
        for start in range(0, valid.numel(), chunk_size):
            idx = valid[start : start + chunk_size]
            h = hidden.index_select(0, idx).to(mm_dtype)
            logits = (h @ w.t()).to(acc_dtype)
            total += _loss_and_grad_(logits, labels.index_select(0, idx), obj, scale)
            if need_grad:
                g = logits.to(mm_dtype)
                if need_h:
                    grad_h.index_copy_(0, idx, (g @ w).to(grad_h.dtype))
                if need_w:
                    if mm_dtype == acc_dtype:
                        grad_w.addmm_(g.t(), h)
                    else:  # low-precision GEMM, fp32 accumulation across chunks
                        grad_w.add_(g.t() @ h)
            # drop this chunk before the next one is computed: two would double the peak
            logits = g = None
    if grad_w is not None:
        grad_w = grad_w.to(weight.dtype)
    return total / denom, grad_h, grad_w


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, obj, chunk_size, ignore_index, denom):
        loss, ctx.grad_h, ctx.grad_w = _fused_pass(
            hidden, weight, labels, obj, chunk_size, ignore_index, denom,
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
        )  # fmt: skip
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.grad_h, ctx.grad_w
        if grad_h is None and grad_w is None and any(ctx.needs_input_grad[:2]):
            raise RuntimeError("fused loss: backward ran twice (retain_graph is not supported)")
        ctx.grad_h = ctx.grad_w = None  # the gradients are handed over, not copied
        if not torch.equal(grad_output, torch.ones_like(grad_output)):
            grad_h = grad_h.mul_(grad_output) if grad_h is not None else None
            grad_w = grad_w.mul_(grad_output) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None


def fused_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    objective: Objective = CROSS_ENTROPY,
    chunk_size: int = 4096,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Any `Objective` from hidden states [..., H] and lm_head weight [V, H], chunked.

    loss = fused_linear_loss(h, w, y, Objective(ce_weight=0, focal_weight=1), chunk_size=1024)
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    hidden_2d = hidden.reshape(-1, hidden.shape[-1])
    labels_1d = labels.reshape(-1).to(hidden.device, torch.long)
    if labels_1d.numel() != hidden_2d.shape[0]:
        raise ValueError(f"labels hold {labels_1d.numel()} tokens, hidden {hidden_2d.shape[0]}")
    valid_count = int((labels_1d != ignore_index).sum())
    denom = _denominator(valid_count, num_items_in_batch, hidden.device)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        loss = _FusedLinearLoss.apply(
            hidden_2d, weight, labels_1d, objective, chunk_size, ignore_index, denom
        )
    else:  # evaluation: the same loop without gradients
        loss = _fused_pass(
            hidden_2d, weight, labels_1d, objective, chunk_size, ignore_index, denom, False, False
        )[0]
    return loss


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 4096,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T` against `labels` without materialising the logits.

    loss = fused_linear_cross_entropy(h[:, :-1].reshape(-1, H), lm_head.weight, y[:, 1:].reshape(-1))
    Equals F.cross_entropy(h @ w.T, y, ignore_index=-100) (or its sum / num_items_in_batch).
    """
    return fused_linear_loss(
        hidden, weight, labels, CROSS_ENTROPY, chunk_size, ignore_index, num_items_in_batch
    )


def _logits_pass(logits, labels, obj, chunk_size, ignore_index, denom, need_grad):
    """Contiguous chunks of rows; for fp32 logits each chunk is copied into its slice of the
    gradient and worked on there, so no buffer exists besides the logits and their gradient."""
    acc_dtype = torch.promote_types(logits.dtype, torch.float32)
    labelled = labels != ignore_index
    grad = torch.empty_like(logits) if need_grad else None
    scale = 1.0 / denom if need_grad else None
    total = torch.zeros((), dtype=acc_dtype, device=logits.device)
    for start in range(0, logits.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        mask = labelled[rows]
        if not bool(mask.any()):  # nothing labelled here: zero gradient, no softmax
            if need_grad:
                grad[rows].zero_()
            continue
        in_place = need_grad and logits.dtype == acc_dtype
        buf = grad[rows].copy_(logits[rows]) if in_place else logits[rows].to(acc_dtype, copy=True)
        targets = torch.where(mask, labels[rows], 0)
        total += _loss_and_grad_(buf, targets, obj, scale, mask)
        if need_grad and not in_place:
            grad[rows].copy_(buf)
        buf = None
    return total / denom, grad


class _ChunkedLogitsLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, obj, chunk_size, ignore_index, denom):
        loss, ctx.grad = _logits_pass(logits, labels, obj, chunk_size, ignore_index, denom, True)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError("chunked loss: backward ran twice (retain_graph is not supported)")
        ctx.grad = None
        if not torch.equal(grad_output, torch.ones_like(grad_output)):
            grad = grad.mul_(grad_output)
        return grad, None, None, None, None, None


def logits_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    objective: Objective = CROSS_ENTROPY,
    chunk_size: int = 8192,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Any `Objective` on existing logits [..., V] (labels already shifted), chunk by chunk.

    loss = logits_loss(out.logits[:, :-1], y[:, 1:], Objective(smooth_weight=1, ce_weight=0,
                       smoothing=0.1))
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    logits_2d = logits.reshape(-1, logits.shape[-1])
    labels_1d = labels.reshape(-1).to(logits.device, torch.long)
    if labels_1d.numel() != logits_2d.shape[0]:
        raise ValueError(f"labels hold {labels_1d.numel()} tokens, logits {logits_2d.shape[0]}")
    valid_count = int((labels_1d != ignore_index).sum())
    denom = _denominator(valid_count, num_items_in_batch, logits.device)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss = _ChunkedLogitsLoss.apply(
            logits_2d, labels_1d, objective, chunk_size, ignore_index, denom
        )
    else:
        loss = _logits_pass(
            logits_2d, labels_1d, objective, chunk_size, ignore_index, denom, False
        )[0]
    return loss


def chunked_cross_entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 8192,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """The seed's API: mean cross-entropy of logits [B, T, V] or [N, V] vs labels [B, T] or [N].

    loss = chunked_cross_entropy_loss(logits[:, :-1], labels[:, 1:], chunk_size=4096)
    Nothing of size [tokens x V] is kept besides the logits and their gradient (bf16 logits
    add one [chunk_size, V] fp32 buffer).
    """
    return logits_loss(logits, labels, CROSS_ENTROPY, chunk_size, ignore_index, num_items_in_batch)


class LossConfigError(MoaiInputError, ValueError):
    """A `loss:` block names an unknown type or parameter, or a value out of range."""


# loss type -> the params it accepts, with their defaults (plus _COMMON)
_TYPES: dict[str, dict[str, float]] = {
    "cross_entropy": {},
    "focal": {"gamma": 2.0, "alpha": 1.0},
    "label_smoothing": {"smoothing": 0.1},
    "multi_objective": {
        "ce_weight": 0.7, "focal_weight": 0.2, "smooth_weight": 0.1,
        "focal_gamma": 2.0, "focal_alpha": 1.0, "smoothing": 0.1,
    },
}  # fmt: skip
_ALIASES = {"ce": "cross_entropy", "chunked_cross_entropy": "cross_entropy",
            "fused_cross_entropy": "cross_entropy", "focal_loss": "focal",
            "smoothing": "label_smoothing", "multi": "multi_objective"}  # fmt: skip
_COMMON = {"ignore_index": -100, "chunk_size": 4096}


class LossFunction:
    """A configured loss, callable like `fused_linear_cross_entropy` (what `model.loss_fn` calls).

    fn = LossFunction("focal", Objective(ce_weight=0, focal_weight=1))
    fn(hidden, lm_head_weight, labels, num_items_in_batch=n)   # from hidden states, chunked
    fn(logits, labels)   /   fn.on_logits(logits, labels)     # seed style, on logits
    """

    def __init__(self, name: str, objective: Objective, chunk_size: int = 4096,
                 ignore_index: int = -100):  # fmt: skip
        self.name, self.objective = name, objective
        self.chunk_size, self.ignore_index = chunk_size, ignore_index

    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor | None = None,
        chunk_size: int | None = None,
        ignore_index: int | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if labels is None:  # seed style: loss_fn(logits, labels)
            if weight.is_floating_point():
                raise TypeError(
                    f"{self.name} loss: labels missing (call fn(hidden, weight, labels))"
                )
            return self.on_logits(hidden, weight, num_items_in_batch=num_items_in_batch)
        return fused_linear_loss(
            hidden, weight, labels, self.objective,
            chunk_size or self.chunk_size,
            self.ignore_index if ignore_index is None else ignore_index,
            num_items_in_batch,
        )  # fmt: skip

    def on_logits(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        chunk_size: int | None = None,
        ignore_index: int | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return logits_loss(
            logits, labels, self.objective,
            chunk_size or self.chunk_size,
            self.ignore_index if ignore_index is None else ignore_index,
            num_items_in_batch,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"LossFunction({self.name!r}, {self.objective})"


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise LossConfigError(f"loss param {name}={value!r}: must be {rule}")


def create_loss_function(config: dict | str | None = None) -> LossFunction:
    """Build a loss from the seed's `loss:` block; usable as `model.loss_fn`.

    create_loss_function({"type": "multi_objective", "params": {"ce_weight": 0.6,
        "focal_weight": 0.3, "smooth_weight": 0.1, "focal_gamma": 2.0, "smoothing": 0.1}})
    Unknown types or params raise LossConfigError (a ValueError) naming them and the valid ones.
    """
    if config is None or isinstance(config, str):
        config = {"type": config or "cross_entropy"}
    if not isinstance(config, dict):
        raise LossConfigError(
            f"loss config must be a mapping with 'type' and 'params', got {config!r}"
        )
    extra = sorted(set(config) - {"type", "params"})
    if extra:
        raise LossConfigError(f"unknown loss key(s) {extra}; valid keys: ['params', 'type']")
    raw_type = str(config.get("type") or "cross_entropy")
    loss_type = _ALIASES.get(raw_type, raw_type)
    if loss_type not in _TYPES:
        raise LossConfigError(
            f"unknown loss type {raw_type!r}; valid types: {', '.join(_TYPES)}",
            hint="set loss.type in the training config",
        )
    params = dict(config.get("params") or {})
    allowed = {**_TYPES[loss_type], **_COMMON}
    # the seed's modules took reduction=; a training loss is always the mean over labelled tokens
    reduction = params.pop("reduction", "mean")
    if reduction != "mean":
        raise LossConfigError(f"loss param reduction={reduction!r}: only 'mean' is supported")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise LossConfigError(
            f"unknown param(s) {unknown} for loss type {loss_type!r}; valid params: "
            f"{', '.join(sorted(allowed))}"
        )
    p = {**allowed, **{k: v for k, v in params.items() if v is not None}}
    for key in allowed:
        if isinstance(p[key], bool) or not isinstance(p[key], (int, float)):
            raise LossConfigError(f"loss param {key}={p[key]!r}: must be a number")
    _check("chunk_size", p["chunk_size"], int(p["chunk_size"]) >= 1, "an integer >= 1")
    if loss_type == "cross_entropy":
        objective = CROSS_ENTROPY
    elif loss_type == "focal":
        objective = Objective(ce_weight=0.0, focal_weight=1.0, focal_gamma=float(p["gamma"]),
                              focal_alpha=float(p["alpha"]))  # fmt: skip
    elif loss_type == "label_smoothing":
        objective = Objective(ce_weight=0.0, smooth_weight=1.0, smoothing=float(p["smoothing"]))
    else:
        objective = Objective(**{f.name: float(p[f.name]) for f in fields(Objective)})
        weights = [objective.ce_weight, objective.focal_weight, objective.smooth_weight]
        for name, value in zip(
            ("ce_weight", "focal_weight", "smooth_weight"), weights, strict=True
        ):
            _check(name, value, value >= 0, ">= 0")
        total = sum(weights)
        _check("ce_weight + focal_weight + smooth_weight", total, math.isclose(total, 1.0,
               abs_tol=1e-6), "1.0 (the seed's rule: a weighted average of the three losses)")  # fmt: skip
    _check("gamma", objective.focal_gamma, objective.focal_gamma >= 0, ">= 0")
    _check("alpha", objective.focal_alpha, objective.focal_alpha > 0, "> 0")
    _check("smoothing", objective.smoothing, 0 <= objective.smoothing <= 1, "in [0, 1]")
    return LossFunction(loss_type, objective, int(p["chunk_size"]), int(p["ignore_index"]))
