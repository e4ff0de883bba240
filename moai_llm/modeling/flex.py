"""FlexAttention over packed documents: a document-causal block mask and the compiled kernel.

`torch.nn.attention.flex_attention` computes attention block by block and skips the blocks a
`BlockMask` marks empty. For a row that packs several documents (`position_ids` restart at 0)
the mask is "same document and causal": SDPA with a dense [T, T] mask computes every score
and throws most away, flex computes only the blocks on the diagonal band of each document.

The block mask is built once per forward (by `AttentionPlan.build`) and shared by every layer.
It is derived from the document starts directly, at block granularity (O((T/128)^2) work):
`create_block_mask` would evaluate the mask function on all T x T token pairs (a second on
the CPU for T = 2048, or a multi-second compile), although for document masks the block
structure follows from where documents start. The result equals `create_block_mask`'s (a test).

    >>> import torch
    >>> positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0]])      # three documents
    >>> mask = document_block_mask(positions, block_size=2)
    >>> mask.to_dense()[0, 0].tolist()                          # blocks of 2 x 2 tokens
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]

The kernel is `torch.compile(flex_attention)` (uncompiled flex is a slow reference). In torch
2.13 flex has no backward on the CPU (it raises); `flex_supports_backward` tells, so the plan
can fall back to SDPA for CPU training and still use flex for CPU inference.
"""

from __future__ import annotations

import functools
import warnings

import torch

BLOCK_SIZE = 128  # flex's default sparse block; kernels are tuned for it


def flex_available() -> bool:
    """True when this torch ships FlexAttention (torch >= 2.5)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def flex_supports_backward(device_type: str) -> bool:
    """Whether flex can compute gradients on this device type (False on the CPU in torch 2.13).

    Asked once per device type with a 16-token call that needs a gradient: torch refuses such a
    call up front on devices without a backward kernel, so this follows the installed version.
    """
    if not flex_available():
        return False
    from torch.nn.attention.flex_attention import flex_attention

    x = torch.zeros(1, 1, 16, 16, device=device_type, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile"
            flex_attention(x, x, x)
    except (NotImplementedError, RuntimeError):
        return False
    return True


def _document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Index of the document each token belongs to, per row: a new one wherever positions are 0."""
    starts = position_ids == 0
    starts[:, 0] = True
    return starts.cumsum(dim=1)


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block matrix [B, 1, nq, nk] -> (count per query block, kv block indices listed first)."""
    count = blocks.sum(dim=-1, dtype=torch.int32)
    order = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True)
    return count, order.to(torch.int32)


def document_block_mask(position_ids: torch.Tensor, block_size: int = BLOCK_SIZE):
    """`BlockMask` letting each token see earlier tokens of its own document (rows [B, T]).

    Without restarts in `position_ids` (or with positions made by the model) it is plain
    causal attention. Blocks are `block_size` tokens square; a block is *full* (computed
    without evaluating the mask) when its queries and keys all lie in one document and every
    key precedes every query, *partial* when it touches the diagonal or a document boundary.
    """
    from torch.nn.attention.flex_attention import BlockMask

    b, t = position_ids.shape
    doc = _document_ids(position_ids)
    n = -(-t // block_size)
    first = doc[:, ::block_size]  # document of each block's first token
    ends = torch.arange(1, n + 1, device=doc.device) * block_size
    last = doc[:, ends.clamp(max=t) - 1]  # document of each block's last token
    below = torch.ones(n, n, dtype=torch.bool, device=doc.device).tril(-1)
    # Documents are contiguous, so a kv block strictly before a q block shares a document with
    # it exactly when the kv block's last document is the q block's first one.
    same_doc = last[:, None, :] == first[:, :, None]  # [b, q block, kv block]
    # A block reaching past the row end is never full: its padding is masked, as in
    # create_block_mask.
    one_doc = (first == last) & (ends <= t)
    full = below & same_doc & one_doc[:, :, None] & one_doc[:, None, :]
    diagonal = torch.eye(n, dtype=torch.bool, device=doc.device)
    partial = (below & same_doc & ~full) | diagonal

    def document_causal(batch, head, q_idx, kv_idx):
        return (doc[batch, q_idx] == doc[batch, kv_idx]) & (q_idx >= kv_idx)

    kv_num, kv_idx = _ordered(partial[:, None])
    full_num, full_idx = _ordered(full[:, None])
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
        mask_mod=document_causal, seq_lengths=(t, t),
    )  # fmt: skip


@functools.cache
def _compiled_kernel():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask, scaling: float
) -> torch.Tensor:
    """[B, H, T, D] q and [B, Hkv, T, D] k/v -> [B, H, T, D]; GQA without repeating k/v."""
    from torch.nn.attention.flex_attention import flex_attention as kernel

    if not torch.compiler.is_compiling():
        kernel = _compiled_kernel()  # inside a compiled block the block's compile covers it
    if v.dtype in (torch.float16, torch.bfloat16) and q.dtype != v.dtype:
        # Under autocast q/k leave QK-norm and RoPE in fp32; the kernel wants one dtype.
        q, k = q.to(v.dtype), k.to(v.dtype)
    return kernel(
        q, k, v, block_mask=block_mask, scale=scaling, enable_gqa=q.shape[1] != k.shape[1]
    )
