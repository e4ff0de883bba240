"""Loaded means whole: the checks a model's weights pass before moai uses or writes them.

- `expected_tensors(config)`: every tensor name a Qwen3 config promises, with its shape
  (Qwen3's names: `model.layers.N.self_attn.q_proj.weight`, ...), computed from the config alone;
- `check_weights(files, config, where)`: the safetensors headers hold each of them, with that
  shape and a floating-point dtype, or a MoaiInputError (exit 2) naming the tensor; with
  `values=True` every tensor is read once and must be finite (what `moai export` calls);
- `non_finite_tensor(named)`: the first of `(name, tensor)` pairs holding NaN or inf; training
  calls it before it writes a checkpoint or final_model/, loaders after they read weights.

Missing tensors matter because transformers fills a tensor the file lacks with random values and
only logs it: a model folder missing `lm_head.weight` would chat, evaluate and fine-tune.

    >>> shapes = expected_tensors({"vocab_size": 10, "hidden_size": 4, "intermediate_size": 8,
    ...     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    ...     "head_dim": 2, "tie_word_embeddings": True})
    >>> shapes["model.layers.0.self_attn.k_proj.weight"], len(shapes)
    ((2, 4), 13)
    >>> import torch
    >>> non_finite_tensor([("a", torch.ones(2)), ("b", torch.tensor([1.0, float("nan")]))])
    'b'
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")


def expected_tensors(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of a Qwen3 model with `config` (a config.json dict)."""
    h, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    hd = int(config.get("head_dim") or h // heads)
    vocab = int(config["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    per_layer = {
        "self_attn.q_proj.weight": (heads * hd, h), "self_attn.k_proj.weight": (kv * hd, h),
        "self_attn.v_proj.weight": (kv * hd, h), "self_attn.o_proj.weight": (h, heads * hd),
        "self_attn.q_norm.weight": (hd,), "self_attn.k_norm.weight": (hd,),
        "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h),
        "mlp.down_proj.weight": (h, inter),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }
    if config.get("attention_bias"):
        per_layer.update({"self_attn.q_proj.bias": (heads * hd,), "self_attn.k_proj.bias": (kv * hd,),
                          "self_attn.v_proj.bias": (kv * hd,)})
    for i in range(int(config["num_hidden_layers"])):
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in per_layer.items()})
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def tensor_headers(files: Iterable[Path]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor in the safetensors `files`, read from the headers."""
    from safetensors import safe_open

    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                piece = handle.get_slice(key)
                out[key] = (piece.get_dtype(), tuple(piece.get_shape()))
    return out


def check_weights(files: Iterable[Path], config: dict[str, Any], where: str, values: bool = False) -> None:
    """Refuse (MoaiInputError naming `where` and the tensor) weights that miss a tensor the
    config promises, hold one of another shape or a dtype that is not floating point, or, with
    `values`, a NaN/inf value. Tensors the config does not name are left alone (transformers
    ignores them too)."""
    files = list(files)
    headers = tensor_headers(files)
    for name, shape in expected_tensors(config).items():
        found = headers.get(name)
        if found is None:
            raise MoaiInputError(f"{where}: the weights have no tensor {name} (config.json promises it)",
                                 hint="the weights are incomplete or belong to another config; save or download the model again")
        dtype, have = found
        if have != shape:
            raise MoaiInputError(f"{where}: tensor {name} has shape {list(have)}, config.json says {list(shape)}",
                                 hint="the folder's config and weights do not belong together")
        if dtype not in FLOAT_DTYPES:
            raise MoaiInputError(f"{where}: tensor {name} is {dtype}, not a floating-point type "
                                 f"({', '.join(FLOAT_DTYPES)})", hint="moai loads unquantized weights only")
    if values:
        check_values(files, where)


def check_values(files: Iterable[Path], where: str) -> None:
    """Every floating-point tensor of `files` finite, read one tensor at a time."""
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                if non_finite_tensor([(key, handle.get_tensor(key))]) is not None:
                    raise MoaiInputError(f"{where}: tensor {key} holds NaN/inf values (a broken model)",
                                         hint="use an earlier checkpoint or download the model again")


def non_finite_tensor(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor with a NaN/inf value (a DTensor is checked
    on its local shard), or None."""
    import torch

    for name, tensor in named:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if torch.is_floating_point(local) and not bool(torch.isfinite(local).all()):
            return name
    return None
