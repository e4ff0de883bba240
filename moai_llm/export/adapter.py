"""A LoRA adapter folder as a llama.cpp LoRA adapter GGUF (`--adapter-only`).

llama.cpp applies such a file to the base model's GGUF at load time (`--lora FILE`,
llama-cpp-python's `lora_path`) and computes `W x + (alpha / r) * B (A x)` for each adapted
matrix, what `merge_and_unload` folds into the weights. The file holds `general.type=adapter`,
`adapter.type=lora`, `adapter.lora.alpha`, and for each adapted matrix the pair
`blk.N.attn_q.weight.lora_a` (r x in) and `...lora_b` (out x r), named by the `gguf` package's
Qwen3 map. rsLoRA's scale (alpha / sqrt(r)) is written as the alpha that gives the same scale.

Adapters llama.cpp cannot express are refused (exit 2) with the way out (export the merged
model instead): DoRA, per-module ranks or alphas, and trained embedding rows or whole modules
(`modules_to_save`, trainable tokens: new vocabulary rows live outside the LoRA pairs).

    >>> lora_pairs({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": 1,
    ...             "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": 2})
    {'model.layers.0.mlp.up_proj': (1, 2)}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

_PREFIX = "base_model.model."
ADAPTER_QUANTS = ("f32", "f16", "bf16")


def read_adapter_config(folder: Path) -> tuple[float, int]:
    """(alpha as llama.cpp reads it, rank) from adapter_config.json, or MoaiInputError."""
    path = folder / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MoaiInputError(f"{path}: unreadable ({exc})") from None
    hint = f"export the merged model instead: moai export {folder} (without --adapter-only)"
    if cfg.get("peft_type", "LORA") != "LORA":
        raise MoaiInputError(f"{path}: a {cfg.get('peft_type')} adapter; llama.cpp adapters are LoRA", hint=hint)
    for key, what in (("use_dora", "DoRA"), ("rank_pattern", "per-module ranks"), ("alpha_pattern", "per-module alphas"),
                      ("modules_to_save", "fully trained modules"), ("trainable_token_indices", "trained token rows")):
        if cfg.get(key):
            raise MoaiInputError(f"{path}: the adapter uses {what} ({key}), which a llama.cpp LoRA adapter cannot hold",
                                 hint=hint)
    rank = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha") or rank)
    if cfg.get("use_rslora"):
        alpha = alpha / math.sqrt(rank) * rank  # llama.cpp scales by alpha / r
    return alpha, rank


def lora_pairs(state: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """module name -> (lora_A, lora_B) from peft's adapter tensors; MoaiInputError for others."""
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name and name.endswith(".weight"):
                module = name.split(marker)[0]
                pairs.setdefault(module, {})[part] = tensor
                break
        else:
            raise MoaiInputError(f"adapter tensor {key} is not a LoRA pair (lora_A/lora_B); llama.cpp adapters hold "
                                 "only those", hint="export the merged model instead (without --adapter-only)")
    broken = [m for m, p in pairs.items() if len(p) != 2]
    if broken:
        raise MoaiInputError(f"adapter module {broken[0]} has only one of lora_A/lora_B")
    return {m: (p["lora_A"], p["lora_B"]) for m, p in sorted(pairs.items())}


def write_adapter_gguf(folder: Path, out: Path, config: Any, quant: str) -> Path:
    """Write the llama.cpp LoRA adapter GGUF of the adapter `folder` (base model `config`) at
    `out` (a temporary path the caller renames)."""
    import gguf
    from safetensors.torch import load_file

    from moai_llm.export.gguf_writer import QUANTS, convert, gguf_name, tensor_type

    if quant not in ADAPTER_QUANTS:
        raise MoaiInputError(f"--quant {quant} with --adapter-only: adapters are written as {', '.join(ADAPTER_QUANTS)}",
                             hint="quantize the base model's GGUF instead; the adapter stays small")
    alpha, _ = read_adapter_config(folder)
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise MoaiInputError(f"{folder}: no adapter_model.safetensors (moai reads safetensors adapters only)")
    pairs = lora_pairs(load_file(str(weights)))
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, int(config.num_hidden_layers))
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_string("moai.export", "adapter")
    spec = QUANTS[quant]
    for module, (a, b) in pairs.items():
        base = gguf_name(name_map, module + ".weight")
        for suffix, tensor in (("lora_a", a), ("lora_b", b)):
            qtype = tensor_type(list(tensor.shape), spec)
            data = convert(tensor, qtype, f"{module}.{suffix}")
            writer.add_tensor(f"{base}.{suffix}", data, raw_dtype=None if data.dtype != "uint8" else qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return out
