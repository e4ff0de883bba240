"""What `moai export MODEL` reads: MODEL resolved as everywhere else, checked whole, tensors streamed.

MODEL is a model folder, a run folder (its final_model/ or newest complete checkpoint), a
checkpoint, or a LoRA adapter folder (loaded onto its base and merged), resolved by the same
function `moai chat` uses. Only Qwen3 models export (the GGUF architecture moai writes), from
safetensors only. Before anything is written, every tensor a Qwen3 model of this config needs
must be present with its shape and a floating-point type (`moai_llm.weights.check_weights`, as
for chat and eval), and nothing else may be there (a tensor llama.cpp's Qwen3 has no place for);
each tensor is checked finite as it is converted. Tensors stream one at a time from the safetensors files, so a model larger
than memory exports.

    >>> src = open_source("outputs/sft")                       # doctest: +SKIP
    >>> src.model_dir.name, src.config.model_type               # doctest: +SKIP
    ('final_model', 'qwen3')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class Source:
    model_dir: Path  # the folder MODEL resolved to
    kind: str  # "model", "final_model", "checkpoint", "adapter", "final_adapter", "hub"
    config: Any  # transformers config
    tokenizer: Any
    tokenizer_dir: Path
    shapes: dict[str, list[int]]  # HF tensor name -> shape, in writing order
    files: list[Path] = field(default_factory=list)  # safetensors files (plain folders)
    state: dict[str, Any] | None = None  # merged tensors (adapters)

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(HF name, float tensor) in `shapes` order, one at a time."""
        if self.state is not None:
            for name in self.shapes:
                yield name, self.state[name]
            return
        from safetensors import safe_open

        where = {}
        for file in self.files:
            with safe_open(str(file), framework="pt") as handle:
                where.update(dict.fromkeys(handle.keys(), file))
        for name in self.shapes:
            with safe_open(str(where[name]), framework="pt") as handle:
                yield name, handle.get_tensor(name)


def expected_shapes(config: Any) -> dict[str, list[int]]:
    """Every tensor a transformers Qwen3 model of `config` saves, with its shape."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or h // heads
    shapes = {"model.embed_tokens.weight": [config.vocab_size, h], "model.norm.weight": [h]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                   p + "self_attn.q_proj.weight": [heads * hd, h], p + "self_attn.k_proj.weight": [kv * hd, h],
                   p + "self_attn.v_proj.weight": [kv * hd, h], p + "self_attn.o_proj.weight": [h, heads * hd],
                   p + "self_attn.q_norm.weight": [hd], p + "self_attn.k_norm.weight": [hd],
                   p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                   p + "mlp.down_proj.weight": [h, inter]}
        if getattr(config, "attention_bias", False):
            shapes |= {p + "self_attn.q_proj.bias": [heads * hd], p + "self_attn.k_proj.bias": [kv * hd],
                       p + "self_attn.v_proj.bias": [kv * hd], p + "self_attn.o_proj.bias": [h]}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = [config.vocab_size, h]
    return shapes


def check_whole(found: dict[str, list[int]], config: Any, where: Path) -> dict[str, list[int]]:
    """`found` checked against the Qwen3 model of `config`: the expected shapes in order, or
    MoaiInputError naming the first missing, misshapen or unexpected tensor."""
    want = expected_shapes(config)
    for name, shape in want.items():
        if name not in found:
            raise MoaiInputError(f"{where}: the weights lack {name} (a Qwen3 model with this config.json has it)",
                                 hint="the folder is incomplete: save or download the model again")
        if list(found[name]) != shape:
            raise MoaiInputError(f"{where}: {name} has shape {list(found[name])}, config.json says {shape}",
                                 hint="config.json and the weights belong to different models")
    # a tied model may still carry lm_head (a copy of the embedding); llama.cpp reuses token_embd
    extra = [n for n in found if n not in want and not (n == "lm_head.weight" and config.tie_word_embeddings)]
    if extra:
        raise MoaiInputError(f"{where}: {extra[0]} is not a Qwen3 tensor ({len(extra)} unexpected in all)",
                             hint="export writes Qwen3 models; this one has other parts")
    return want


def check_qwen3(config: Any, where: Path) -> None:
    kind = getattr(config, "model_type", None)
    if kind != "qwen3":
        raise MoaiInputError(f"{where}: config.json says model_type {kind!r}; moai exports Qwen3 models (model_type "
                             "'qwen3') to GGUF", hint="for other architectures use llama.cpp's convert_hf_to_gguf.py")


def find_tokenizer(model_dir: Path, tokenizer_path: str | Path | None) -> Path:
    """The tokenizer folder: --tokenizer, else the model folder, else its run folder."""
    candidates = [Path(tokenizer_path).expanduser()] if tokenizer_path else [
        model_dir, model_dir.parent, model_dir.parent.parent]
    for folder in candidates:
        if any((folder / n).is_file() for n in _TOKENIZER_FILES):
            return folder
    raise MoaiInputError(f"{candidates[0]}: no tokenizer (tokenizer.json / tokenizer_config.json)",
                         hint="save the tokenizer into the model folder, or pass --tokenizer DIR")


def _load_config(model_dir: Path, trust_remote_code: bool) -> Any:
    import json

    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=bool(trust_remote_code))
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise MoaiInputError(f"{model_dir / 'config.json'}: not a model config ({exc})") from None


def open_source(path: str | Path, tokenizer_path: str | Path | None = None, trust_remote_code: bool = False
                ) -> Source:
    """Resolve MODEL and check it whole (see the module docstring); loads nothing large for a
    plain folder, the base and the merged adapter for an adapter folder."""
    from moai_llm.inference.loading import resolve_model_dir
    from moai_llm.pretrained import check_safetensors
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.weights import check_weights

    model_dir, kind = resolve_model_dir(path)
    state = None
    files: list[Path] = []
    if kind in ("adapter", "final_adapter"):
        import torch

        from moai_llm.adapters import load_adapter_model

        merged = load_adapter_model(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
        config = merged.config
        check_qwen3(config, model_dir)
        state = {k: v.detach() for k, v in merged.state_dict().items()}
        found = {k: list(v.shape) for k, v in state.items()}
    else:
        files, found = check_safetensors(model_dir)
        config = _load_config(model_dir, trust_remote_code)
        check_qwen3(config, model_dir)
        check_weights(files, config.to_dict(), str(model_dir))  # the same refusals as chat and eval
    shapes = check_whole(found, config, model_dir)
    tok_dir = find_tokenizer(model_dir, tokenizer_path)
    tokenizer = load_tokenizer(tok_dir, trust_remote_code=trust_remote_code)
    if len(tokenizer) > config.vocab_size:
        raise MoaiInputError(f"vocabulary mismatch: the tokenizer in {tok_dir} has {len(tokenizer)} tokens but the "
                             f"model in {model_dir} has {config.vocab_size} embedding rows",
                             hint="use the tokenizer the model was trained with")
    return Source(model_dir, kind, config, tokenizer, tok_dir, shapes, files, state)
