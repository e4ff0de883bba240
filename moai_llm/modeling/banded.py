"""Exact attention over packed rows of short documents, in tiles: SDPA over a band of keys.

A packed row of T tokens whose documents are short needs only the scores near the diagonal:
a query sees its own document, which starts at most a document length before it. SDPA with a
dense [T, T] block-diagonal mask computes all T^2 scores anyway. Here the row is cut into
query tiles of `tile` tokens; tile i attends to the `window` keys that end where the tile ends
(keys before the row start are padding, masked). The window is the smallest power of two
that reaches back to the start of the document of every tile's first token, so no allowed
pair is dropped and the result is the same attention (a test compares it with eager).

This is the packed path of the SDPA backend wherever FlexAttention cannot run, above all CPU
training (flex has no CPU backward in torch 2.13). It is used when the window is at most a
quarter of the row (`MAX_WINDOW_FRACTION`). Forward + backward of one layer's attention at
T = 2048 on a 2-core CPU took 0.15x the dense-mask time with documents of ~15 tokens and 0.41x
with ~200 (benchmarks/bench_attention.py); a window of half the row was no faster than the
dense mask (measured while choosing the threshold), so longer documents keep it.

    >>> import torch
    >>> starts = torch.zeros(1, 256, dtype=torch.bool)
    >>> starts[0, ::40] = True                           # documents of 40 tokens
    >>> band = Band.build(starts)
    >>> band.tile, band.window, tuple(band.mask.shape)   # 8 tiles of 32 queries, 64 keys each
    (32, 64, (8, 1, 32, 64))
    >>> starts[0, 40:] = False                           # a document of 216 tokens: no band
    >>> Band.build(starts) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TILES = (128, 64, 32, 16)  # query tile sizes tried, largest first (fewer, larger SDPA calls)
MAX_WINDOW_FRACTION = 4  # banded only when window <= T / 4; beyond that the dense mask is as fast
# A tile's key/value window is copied for every query head: at most MAX_COPY tiles long, so
# the copies stay within 4x the queries (documents of ~500 tokens in rows of 2048 would
# otherwise pick 16-token tiles with 512-key windows: 32 copies of k and v per layer).
MAX_COPY = 4
# False makes SDPA use the dense block-diagonal mask again (the baseline of the benchmark).
enabled = True


@dataclass
class Band:
    """Query tiles of `tile` tokens, each seeing the `window` keys ending with the tile."""

    tile: int
    window: int
    mask: torch.Tensor  # bool [B * T / tile, 1, tile, window], True = may attend

    @classmethod
    def build(cls, starts: torch.Tensor) -> Band | None:
        """The band for rows whose documents begin where `starts` [B, T] is True; None when
        the documents are too long for a band to beat the dense mask."""
        if not enabled:
            return None
        b, t = starts.shape
        idx = torch.arange(t, device=starts.device)
        doc_start = torch.where(starts, idx, 0).cummax(dim=1).values  # first token of its doc
        best = None
        for tile in TILES:
            if t % tile:
                continue
            # Keys needed by tile i: from its first token's document start to the tile's end.
            reach = int(((idx[tile - 1 :: tile] + 1) - doc_start[:, ::tile]).max())
            window = tile
            while window < reach:
                window *= 2
            if window > MAX_COPY * tile:
                continue
            if best is None or window < best[1]:
                best = (tile, window)
        if best is None or best[1] * MAX_WINDOW_FRACTION > t:
            return None
        tile, window = best
        return cls(tile, window, _band_mask(starts.cumsum(dim=1), tile, window))


def _band_mask(doc: torch.Tensor, tile: int, window: int) -> torch.Tensor:
    b, t = doc.shape
    n = t // tile
    device = doc.device
    keys = (torch.arange(n, device=device)[:, None] + 1) * tile - window
    keys = keys + torch.arange(window, device=device)  # [n, window] key positions, < 0 = padding
    queries = torch.arange(t, device=device).view(n, tile)
    key_doc = doc[:, keys.clamp(min=0)]  # [b, n, window]
    same = doc.view(b, n, tile)[..., None] == key_doc[:, :, None, :]
    causal = (keys[:, None, :] <= queries[:, :, None]) & (keys >= 0)[:, None, :]
    return (same & causal).reshape(b * n, 1, tile, window)


def _windows(x: torch.Tensor, tile: int, window: int, heads: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B * T / tile, heads, window, D]: the keys (or values) of every tile."""
    b, hkv, t, d = x.shape
    x = F.pad(x, (0, 0, window - tile, 0)).unfold(2, window, tile)  # [b, hkv, n, d, window]
    x = x.permute(0, 2, 1, 4, 3)  # [b, n, hkv, window, d]
    if heads != hkv:
        n = x.shape[1]
        x = x[:, :, :, None].expand(b, n, hkv, heads // hkv, window, d)
    return x.reshape(-1, heads, window, d)


def banded_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, band: Band, scaling: float, dropout: float
) -> torch.Tensor:
    """Attention of q [B, H, T, D] over k, v [B, Hkv, T, D] inside the band; [B, H, T, D] out."""
    b, h, t, d = q.shape
    n = t // band.tile
    tiles = q.view(b, h, n, band.tile, d).transpose(1, 2).reshape(b * n, h, band.tile, d)
    out = F.scaled_dot_product_attention(
        tiles,
        _windows(k, band.tile, band.window, h),
        _windows(v, band.tile, band.window, h),
        attn_mask=band.mask,
        dropout_p=dropout,
        scale=scaling,
    )
    return out.view(b, n, h, band.tile, d).transpose(1, 2).reshape(b, h, t, d)
