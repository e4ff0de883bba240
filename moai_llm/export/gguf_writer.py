"""Write a Qwen3 model as one GGUF file with the `gguf` package (llama.cpp's own writer).

Tensor names come from the package's Qwen3 name map (`blk.N.attn_q.weight`, ...), so the file
follows the format as llama.cpp evolves it; every hyperparameter llama.cpp's Qwen3 reads is
written (heads, KV heads, head_dim, RMSNorm eps, RoPE theta and YaRN scaling, context length);
a tied model has no `output.weight` (llama.cpp then reuses `token_embd`). The tokenizer keys
come from `tokenizer_meta`.

Types (`--quant`): f32; f16 and bf16 (matrices in that type, norms in f32, as llama.cpp's
converter does); q8_0 (matrices whose rows are a multiple of 32 values, quantized by
`gguf.quants`, the rest f16). The header and tensor table are written first from the shapes,
then each tensor is converted and written in turn: memory holds one tensor at a time.

    >>> QUANTS["q8_0"].matrix.name
    'Q8_0'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from moai_llm.errors import MoaiInputError
from moai_llm.export.tokenizer_meta import TokenizerMeta, write_tokenizer_meta
from moai_llm.faults import fault_point

T = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Quant:
    matrix: gguf.GGMLQuantizationType  # 2-D weights
    file_type: gguf.LlamaFileType


QUANTS = {
    "f32": Quant(T.F32, gguf.LlamaFileType.ALL_F32),
    "f16": Quant(T.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": Quant(T.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": Quant(T.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}


def tensor_type(shape: list[int], quant: Quant) -> gguf.GGMLQuantizationType:
    """The GGUF type of a tensor of `shape` under `quant` (norms and biases stay f32)."""
    if len(shape) < 2:
        return T.F32
    block = gguf.GGML_QUANT_SIZES[quant.matrix][0]
    return quant.matrix if shape[-1] % block == 0 else T.F16


def _byte_shape(shape: list[int], qtype: gguf.GGMLQuantizationType) -> tuple[int, ...]:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return (*shape[:-1], shape[-1] // block * size)


def convert(tensor: Any, qtype: gguf.GGMLQuantizationType, name: str) -> np.ndarray:
    """`tensor` (torch) as the numpy array the writer stores for `qtype`; refuses non-finite
    values (a broken model is never exported)."""
    import torch

    data = tensor.detach().to(torch.float32)
    if not bool(torch.isfinite(data).all()):
        raise MoaiInputError(f"the weights' {name} holds NaN or infinite values",
                             hint="export a checkpoint from before training diverged")
    array = data.numpy()
    if qtype == T.F32:
        return array
    if qtype == T.F16:
        return array.astype(np.float16)
    return gguf.quants.quantize(array, qtype)


def gguf_name(name_map: Any, hf_name: str) -> str:
    found = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise MoaiInputError(f"{hf_name}: no Qwen3 GGUF tensor of that name")
    return found


def write_hparams(writer: gguf.GGUFWriter, config: Any, name: str, quant: Quant) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_key_length(int(head_dim))
    writer.add_value_length(int(head_dim))
    writer.add_rope_freq_base(float(theta if theta is not None else 10000.0))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    kind = rope.get("rope_type") or rope.get("type")
    if kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings")
                                                 or config.max_position_embeddings))
    elif kind not in (None, "default"):
        raise MoaiInputError(f"config.json: RoPE scaling {kind!r} has no Qwen3 GGUF form (default or yarn)")
    writer.add_file_type(quant.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_gguf(out: Path, config: Any, shapes: dict[str, list[int]], tensors: Callable[[], Iterator[tuple[str, Any]]],
               meta: TokenizerMeta, quant: str, name: str, advance: Callable[[int], None] = lambda n: None,
               extra: dict[str, str] | None = None) -> Path:
    """Write the GGUF at `out` (a path moai owns; the caller renames it into place).
    `advance(n)` is called after each tensor with its parameter count."""
    spec = QUANTS[quant]
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, int(config.num_hidden_layers))
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    write_hparams(writer, config, name, spec)
    write_tokenizer_meta(writer, meta)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    plan = []
    for hf_name, shape in shapes.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        qtype = tensor_type(shape, spec)
        plan.append((hf_name, qtype))
        byte_shape = _byte_shape(shape, qtype)
        dtype = {T.F32: np.float32, T.F16: np.float16}.get(qtype, np.uint8)
        raw = None if qtype in (T.F32, T.F16) else qtype
        writer.add_tensor_info(gguf_name(name_map, hf_name), byte_shape if raw else shape, np.dtype(dtype),
                               int(np.prod(byte_shape)), raw_dtype=raw)
    types = dict(plan)
    writer.path = Path(out)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for hf_name, tensor in tensors():
            if hf_name not in types:
                continue
            writer.write_tensor_data(convert(tensor, types[hf_name], hf_name))
            advance(int(np.prod(shapes[hf_name])))
            fault_point("export.tensor_written")
        handle = writer.fout[0]
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        writer.close()
    return out
