"""Bytes of a 4-bit (QLoRA) frozen base: NF4 weights with double quantisation.

bitsandbytes' NF4 (Dettmers et al. 2023, "QLoRA") stores each Linear weight of the decoder
layers as 4-bit codes, two per byte, with one absmax scale per block of 64 weights. Double
quantisation stores those scales as 8-bit values with one fp32 scale per 256 of them, so a
quantized weight costs 4 + 8/64 + 32/(64 * 256) = 4.127 bits (0.516 bytes) instead of 2 (bf16)
or 4 (fp32) bytes; without double quantisation the fp32 scales make it 4.5 bits. What is not a
decoder Linear (embeddings, lm_head, norms) is not quantized (transformers' bitsandbytes
integration keeps the output head in full precision) and is held in the compute dtype.
During a matmul bitsandbytes dequantizes one weight to the compute dtype and drops it after:
one Linear's worth of transient memory.

    >>> nf4_bytes(64 * 256)                 # 16,384 weights: 8 KiB of codes, 256 + 4 bytes of scales
    8452
    >>> round(nf4_bytes(10**9) / 10**9, 3)   # bytes per weight
    0.516
"""

from __future__ import annotations

import math
from typing import Any

NF4_BLOCK = 64  # weights per absmax scale
DOUBLE_QUANT_BLOCK = 256  # 8-bit scales per fp32 second-level scale


def nf4_bytes(weights: int, double_quant: bool = True) -> int:
    """Bytes of `weights` parameters in NF4: packed codes plus their block scales."""
    blocks = math.ceil(weights / NF4_BLOCK)
    scales = blocks + 4 * math.ceil(blocks / DOUBLE_QUANT_BLOCK) if double_quant else 4 * blocks
    return math.ceil(weights / 2) + scales


def qlora_frozen_bytes(shape: Any, frozen: int, bf16: bool, double_quant: bool = True) -> tuple[int, int]:
    """(held, transient) bytes of a 4-bit frozen base of `frozen` parameters with the memory
    model's ModelShape `shape`: the decoder Linears in NF4, the rest (embeddings, lm_head, norms)
    in the compute dtype (bf16 under a bf16 plan, else fp32); the transient is one dequantized
    Linear (the largest: an MLP projection, H x I) in the compute dtype."""
    h, q, kv = shape.hidden, shape.q, shape.kv
    linears = shape.layers * (h * q + 2 * h * kv + q * h + 3 * h * shape.intermediate)
    e = 2 if bf16 else 4
    return nf4_bytes(linears, double_quant) + e * (frozen - linears), e * h * max(shape.intermediate, q)
