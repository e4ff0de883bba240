"""Grouped-query attention with QK-norm, RoPE, a KV cache and packed-document masking.

One `MoaiAttention` per layer: q/k/v projections, RMSNorm of q and k over head_dim *before*
RoPE (Qwen3), then one of four backends, chosen once per forward by `AttentionPlan`:

- flash-attn 2 (`flash_attn_func` / `flash_attn_varlen_func`) when installed, on CUDA, in
  fp16/bf16 and without a padding mask;
- FlexAttention (`moai_llm.modeling.flex`) for packed rows: a compiled kernel that skips the
  blocks a document-causal block mask marks empty (no CPU backward in torch 2.13: there the
  plan falls back to SDPA while gradients are needed);
- PyTorch SDPA otherwise (`F.scaled_dot_product_attention`);
- eager (matmul + softmax in fp32), for debugging or when asked.

Packed documents: a training row may hold several documents, marked by `position_ids` that
restart at 0. Attention must not cross them. `AttentionPlan.build` detects a restart (one
check per forward) and then gives flash-attn the `cu_seqlens` of the documents, flex a
document-causal `BlockMask`, SDPA a band of key tiles when the documents are short
(banded.py) or else, like eager, a block-diagonal causal mask. Without a restart
it uses plain `is_causal` (flex rows too: SDPA's causal kernels), so the common path pays
nothing. The plan is built once per forward and shared by every layer; decoding with a KV
cache and padded batches take the SDPA paths whatever the backend.

    plan = AttentionPlan.build("sdpa", position_ids, attention_mask=None, q_len=T, past_len=0,
                               dtype=torch.float32)
    out = attn(hidden, cos, sin, plan, cache=None)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moai_llm.defaults import ATTENTION_BACKENDS
from moai_llm.modeling import flex
from moai_llm.modeling.banded import Band, banded_sdpa
from moai_llm.modeling.normalization import MoaiRMSNorm
from moai_llm.modeling.rope import apply_rotary_pos_emb

try:  # optional dependency (`pip install moai[flash]`)
    from flash_attn import flash_attn_func, flash_attn_varlen_func
except Exception:  # missing wheel, CUDA mismatch, ...: fall back to SDPA
    flash_attn_func = flash_attn_varlen_func = None

IMPLEMENTATIONS = ATTENTION_BACKENDS  # fastest first (moai_llm/defaults.py)
FLASH, FLEX = IMPLEMENTATIONS[:2]


def flash_attn_available() -> bool:
    """True when flash-attn imports and a CUDA device is present."""
    return flash_attn_func is not None and torch.cuda.is_available()


def attention_backends(
    device_type: str, *, flash_installed: bool | None = None, needs_grad: bool = True
) -> list[tuple[str, str]]:
    """Usable attention backends for packed rows on `device_type`, best first, each with why.

    CUDA: flash-attn varlen (when installed) -> FlexAttention -> SDPA -> eager. CPU: flex only
    without gradients (torch 2.13 has no flex backward on the CPU), where it was the fastest:
    one layer at T = 2048 with documents of ~15 / ~200 / ~1500 tokens took 0.17x / 0.20x /
    0.46x the time of SDPA with a dense mask, a forward of the `small` preset 0.62x / 0.72x /
    0.85x (benchmarks/bench_attention.py, RESULTS.md). For CPU training SDPA runs short
    documents in a band of tiles (banded.py). `flash_installed=None` looks at this machine.

    >>> [name for name, why in attention_backends("cpu")]
    ['sdpa', 'eager']
    >>> attention_backends("cuda", flash_installed=False)[0][0]
    'flex_attention'
    """
    if flash_installed is None:
        flash_installed = flash_attn_func is not None
    order = []
    if device_type == "cuda" and flash_installed:
        order.append((FLASH, "flash-attn varlen: packed documents without a mask (bf16/fp16)"))
    sdpa = "SDPA: a band of key tiles for short documents, else a block-diagonal mask"
    if flex.flex_available() and (device_type == "cuda" or not needs_grad):
        order.append((FLEX, "FlexAttention: compiled, skips the blocks between documents"))
    elif flex.flex_available():
        sdpa += " (FlexAttention has no backward on the CPU)"
    return [*order, ("sdpa", sdpa), ("eager", "matmul + softmax in fp32, the reference")]


def resolve_attn_implementation(requested: str | None) -> str:
    """Map "auto"/None to the first of `attention_backends` for this machine; check names.

    resolve_attn_implementation("auto")   # "sdpa" on a CPU machine
    """
    if requested in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return attention_backends(device)[0][0]
    if requested == FLASH and flash_attn_func is None:
        raise ValueError(
            "attn_implementation='flash_attention_2' needs flash-attn: pip install 'moai[flash]' "
            "(CUDA only), or use attn_implementation='auto'"
        )
    if requested == FLEX and not flex.flex_available():
        raise ValueError(
            "attn_implementation='flex_attention' needs torch >= 2.5, or use "
            "attn_implementation='auto'"
        )
    if requested not in IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of auto, {', '.join(IMPLEMENTATIONS)}; "
            f"got {requested!r}"
        )
    return requested


def flash_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """flash-attn kernels run on CUDA in fp16/bf16 only (dtype: the matmul dtype under autocast)."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)


def flex_usable(device: torch.device) -> bool:
    """flex runs forward everywhere, backward where torch has the kernel (not the CPU in 2.13)."""
    return not torch.is_grad_enabled() or flex.flex_supports_backward(device.type)


@dataclass
class AttentionPlan:
    """How every layer of one forward attends: backend plus mask / document boundaries."""

    backend: str  # FLASH | FLEX | "sdpa" | "eager"
    is_causal: bool = True
    mask: torch.Tensor | None = None  # bool [B, 1, Tq, Tk], True = may attend
    cu_seqlens: torch.Tensor | None = None  # int32 [docs + 1], flash varlen over the flat batch
    max_seqlen: int = 0
    block_mask: object = None  # flex BlockMask of the documents (flex.document_block_mask)
    band: Band | None = None  # SDPA over tiles near the diagonal (banded.py), short documents

    @classmethod
    def build(
        cls,
        backend: str,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        q_len: int,
        past_len: int,
        dtype: torch.dtype,
        may_be_packed: bool = True,
    ) -> AttentionPlan:
        """Decide backend and masking; `may_be_packed=False` (positions made by the model)
        skips the one data-dependent check, so that path traces without graph breaks."""
        device = position_ids.device
        if backend == FLASH and not flash_usable(device, dtype):
            backend = "sdpa"
        if backend == FLEX and not flex_usable(device):
            backend = "sdpa"
        if attention_mask is not None and attention_mask.dim() == 4:
            # A ready-made 4D mask (e.g. from generate with a static cache): use it as given.
            mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
            return cls("eager" if backend == "eager" else "sdpa", False, mask)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        kv_len = past_len + q_len
        if attention_mask is not None:
            # Padding: causal over the cache plus a key mask; each query may always see itself
            # so fully padded rows give finite (ignored) outputs instead of NaN.
            causal = _causal_mask(q_len, kv_len, past_len, device)
            keys = attention_mask[:, None, None, :kv_len].bool()
            diag = torch.zeros_like(causal)
            diag[
                torch.arange(q_len, device=device), past_len + torch.arange(q_len, device=device)
            ] = True
            mask = (causal & keys) | diag
            return cls("eager" if backend == "eager" else "sdpa", False, mask)
        if past_len == 0 and q_len > 1 and may_be_packed:
            starts = position_ids == 0
            starts[:, 0] = True
            if bool(starts[:, 1:].any()):
                return cls._packed(backend, starts, position_ids)
        if backend == FLEX:
            backend = "sdpa"  # one document per row, or decoding: SDPA's causal kernels
        if past_len == 0 and q_len > 1:
            return cls(backend, True)
        if q_len == 1:
            return cls(backend, False)  # one new token sees the whole cache
        # Chunked prefill onto a cache: causal, aligned to the end of the keys.
        if backend == FLASH:
            return cls(backend, True)  # flash-attn aligns causal masks bottom-right
        return cls(backend, False, _causal_mask(q_len, kv_len, past_len, device)[None, None])

    @classmethod
    def _packed(cls, backend: str, starts: torch.Tensor, positions: torch.Tensor) -> AttentionPlan:
        if backend == FLEX:
            return cls(backend, False, block_mask=flex.document_block_mask(positions))
        if backend == FLASH:
            flat = starts.flatten()
            begins = flat.nonzero().flatten().to(torch.int32)
            total = torch.tensor([flat.numel()], dtype=torch.int32, device=flat.device)
            cu = torch.cat([begins, total])
            return cls(backend, True, cu_seqlens=cu, max_seqlen=int((cu[1:] - cu[:-1]).max()))
        if backend == "sdpa":
            band = Band.build(starts)
            if band is not None:
                return cls(backend, False, band=band)
        seg = starts.cumsum(dim=1)  # document index of every token, per row
        t = starts.shape[1]
        same_doc = seg[:, :, None] == seg[:, None, :]
        causal = torch.ones(t, t, dtype=torch.bool, device=starts.device).tril()
        return cls(backend, False, (same_doc & causal)[:, None])


def _causal_mask(q_len: int, kv_len: int, past_len: int, device: torch.device) -> torch.Tensor:
    q_pos = torch.arange(q_len, device=device)[:, None] + past_len
    return torch.arange(kv_len, device=device)[None, :] <= q_pos


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: AttentionPlan,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    """Reference attention: [B, H, T, D] in, [B, H, T, D] out (softmax in fp32)."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    mask = plan.mask
    if mask is None and plan.is_causal:
        mask = _causal_mask(q.shape[2], k.shape[2], k.shape[2] - q.shape[2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, v)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: AttentionPlan,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    if plan.band is not None:
        return banded_sdpa(q, k, v, plan.band, scaling, dropout)
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    groups = hq // hkv
    if groups == 1:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=plan.mask, dropout_p=dropout, is_causal=plan.is_causal, scale=scaling
        )
    if plan.mask is None and t == 1:
        # Decoding one token: the query heads sharing a KV head become `groups` query rows of
        # that head, so no key/value copy is made at all.
        out = F.scaled_dot_product_attention(
            q.reshape(b, hkv, groups, d), k, v, dropout_p=dropout, scale=scaling
        )
        return out.reshape(b, hq, 1, d)
    if plan.mask is None:
        # SDPA's native GQA: ~20% faster fwd+bwd than repeating k/v on the CPU kernel.
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=plan.is_causal, scale=scaling, enable_gqa=True
        )
    # With a mask, enable_gqa falls back to the slow math kernel: repeat k/v instead.
    tk = k.shape[2]
    k = k[:, :, None].expand(b, hkv, groups, tk, d).reshape(b, hq, tk, d)
    v = v[:, :, None].expand(b, hkv, groups, tk, d).reshape(b, hq, tk, d)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=plan.mask, dropout_p=dropout, scale=scaling
    )


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: AttentionPlan,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    if v.dtype in (torch.float16, torch.bfloat16) and q.dtype != v.dtype:
        # Under autocast q/k leave QK-norm and RoPE in fp32; the kernel wants v's fp16/bf16.
        q, k = q.to(v.dtype), k.to(v.dtype)
    # flash-attn wants [B, T, H, D] and handles GQA natively.
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if plan.cu_seqlens is not None:
        b, t, h, d = q.shape
        out = flash_attn_varlen_func(
            q.reshape(b * t, h, d),
            k.reshape(b * t, k.shape[2], d),
            v.reshape(b * t, v.shape[2], d),
            plan.cu_seqlens,
            plan.cu_seqlens,
            plan.max_seqlen,
            plan.max_seqlen,
            dropout_p=dropout,
            softmax_scale=scaling,
            causal=True,
        ).reshape(b, t, h, d)
    else:
        out = flash_attn_func(
            q, k, v, dropout_p=dropout, softmax_scale=scaling, causal=plan.is_causal
        )
    return out.transpose(1, 2)


def flex_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: AttentionPlan,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    if dropout:
        raise ValueError("attn_implementation='flex_attention' has no attention dropout; "
                         "set attention_dropout=0 or use attn_implementation='sdpa'")
    return flex.flex_attention(q, k, v, plan.block_mask, scaling)


BACKENDS = {
    FLASH: flash_attention,
    FLEX: flex_attention,
    "sdpa": sdpa_attention,
    "eager": eager_attention,
}


class MoaiAttention(nn.Module):
    """GQA self-attention of one decoder layer (HF names: q_proj ... o_proj, q_norm, k_norm)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = float(config.attention_dropout)
        bias = bool(config.attention_bias)
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=bias)
        self.q_norm = MoaiRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = MoaiRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: AttentionPlan,
        cache=None,
    ) -> torch.Tensor:
        b, t, _ = hidden.shape
        q = self.q_norm(self.q_proj(hidden).view(b, t, self.num_heads, self.head_dim)).transpose(
            1, 2
        )
        k = self.k_norm(self.k_proj(hidden).view(b, t, self.num_kv_heads, self.head_dim)).transpose(
            1, 2
        )
        v = self.v_proj(hidden).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        dropout = self.attention_dropout if self.training else 0.0
        out = BACKENDS[plan.backend](q, k, v, plan, self.scaling, dropout)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
