"""MoaiConfig: the model configuration, saved as a stock Qwen3 config.

`MoaiConfig` subclasses transformers' `Qwen3Config`, so a saved `config.json` says
`model_type: "qwen3"`, `architectures: ["Qwen3ForCausalLM"]` and `rope_parameters`, and stock
transformers (or vLLM, llama.cpp converters) reads it without remote code. On top of Qwen3 it:

- accepts the seed's spellings: `rope_scaling={"type": "yarn", "factor": 4.0,
  "original_max_position_embeddings": 32768}` (with the seed's `alpha`/`beta` ramp bounds mapped
  to `beta_slow`/`beta_fast`), `hidden_act="swiglu"`, `use_qk_norm`, `mlp_bias=False`;
- validates on construction and raises `ValueError` naming the field (heads divisible by KV
  heads, positive sizes, known RoPE types, YaRN lengths consistent with max_position_embeddings);
- adds `loss_chunk_size` (rows per chunk of the fused linear cross-entropy) and the
  `attn_implementation` choice "auto" (flash-attn -> FlexAttention -> SDPA -> eager).

    cfg = MoaiConfig.from_preset("tiny")
    parameter_count(cfg)          # exact number of parameters of MoaiForCausalLM(cfg)
"""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import Qwen3Config

from moai_llm.defaults import ATTENTION_BACKENDS
from moai_llm.paths import preset_names, preset_path

ATTN_IMPLEMENTATIONS = ("auto", *ATTENTION_BACKENDS)
ROPE_TYPES = ("default", "linear", "yarn")
# The seed's YaRN dict used the paper's alpha/beta names for the ramp bounds (alpha=1, beta=32).
_SEED_ROPE_ALIASES = {"alpha": "beta_slow", "beta": "beta_fast"}


def _normalize_rope_scaling(rope: dict | None) -> dict | None:
    """Seed-style `rope_scaling` -> transformers `rope_parameters` keys (type -> rope_type ...)."""
    if rope is None:
        return None
    if not isinstance(rope, dict):
        raise ValueError(
            f"MoaiConfig.rope_scaling must be a dict or None, got {type(rope).__name__}"
        )
    rope = dict(rope)
    kind = rope.pop("type", None)
    rope.setdefault("rope_type", kind or "default")
    for old, new in _SEED_ROPE_ALIASES.items():
        if old in rope:
            rope.setdefault(new, rope.pop(old))
    return rope


# Re-applied so the widened field types below (head_dim may be None) are what gets validated.
@strict(accept_kwargs=True)
class MoaiConfig(Qwen3Config):
    """Qwen3 configuration plus moai's validation, seed aliases and training fields.

    MoaiConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=512,
               rope_scaling={"type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 256})
    """

    # The seed's default RoPE base (Qwen3's too); transformers' generic default is 10000.
    default_theta = 1_000_000.0

    # None derives head_dim = hidden_size // num_attention_heads (the seed's behaviour).
    head_dim: int | None = None
    # Rows of hidden states per chunk in the fused linear cross-entropy (bounds logits memory).
    loss_chunk_size: int = 4096
    # Qwen3 always normalises q and k over head_dim before RoPE; kept for the seed's configs.
    use_qk_norm: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if "rope_scaling" in kwargs:
            kwargs["rope_scaling"] = _normalize_rope_scaling(kwargs["rope_scaling"])
        if self.rope_parameters is not None:
            self.rope_parameters = _normalize_rope_scaling(self.rope_parameters)
        if kwargs.get("hidden_act", self.hidden_act) == "swiglu":
            kwargs.pop("hidden_act", None)
            self.hidden_act = "silu"  # SwiGLU = SiLU-gated linear unit, Qwen3's "silu" MLP
        if kwargs.pop("mlp_bias", False):
            raise ValueError("MoaiConfig.mlp_bias: Qwen3 MLPs have no bias; set mlp_bias=false")
        if self.head_dim is None and self.num_attention_heads:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"MoaiConfig.head_dim: hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_attention_heads ({self.num_attention_heads}); set head_dim explicitly "
                    "(e.g. head_dim=128)"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if kwargs.get("attn_implementation") == "auto":
            # transformers does not know "auto"; the model resolves None the same way.
            kwargs["attn_implementation"] = None
        super().__post_init__(**kwargs)
        self._validate_moai()

    def _validate_moai(self) -> None:
        positive = (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "loss_chunk_size",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MoaiConfig.{name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"MoaiConfig.num_key_value_heads: num_attention_heads ({self.num_attention_heads}) "
                f"must be divisible by num_key_value_heads ({self.num_key_value_heads}) for GQA"
            )
        if self.head_dim % 2:
            raise ValueError(f"MoaiConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"MoaiConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if self.hidden_act != "silu":
            raise ValueError(
                f"MoaiConfig.hidden_act must be 'silu' (or the seed's 'swiglu'), got {self.hidden_act!r}"
            )
        if not self.use_qk_norm:
            raise ValueError(
                "MoaiConfig.use_qk_norm=False is not a Qwen3 model (stock transformers always "
                "applies QK-norm); keep use_qk_norm=true"
            )
        if self.use_sliding_window:
            raise ValueError("MoaiConfig.use_sliding_window: moai models use full attention only")
        attn = self._attn_implementation
        if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"MoaiConfig.attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                f"got {attn!r}"
            )
        self._validate_rope()

    def _validate_rope(self) -> None:
        rope = self.rope_parameters or {}
        kind = rope.get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise ValueError(
                f"MoaiConfig.rope_scaling: unknown type {kind!r}; known: {', '.join(ROPE_TYPES)}"
            )
        theta = rope.get("rope_theta")
        if not (isinstance(theta, (int, float)) and theta > 0):
            raise ValueError(f"MoaiConfig.rope_theta must be > 0, got {theta!r}")
        if kind == "default":
            return
        factor = rope.get("factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor < 1:
            raise ValueError(
                f"MoaiConfig.rope_scaling.factor must be a number >= 1, got {factor!r}"
            )
        if kind != "yarn":
            return
        original = rope.get("original_max_position_embeddings")
        if not isinstance(original, int) or original <= 0:
            raise ValueError(
                "MoaiConfig.rope_scaling.original_max_position_embeddings must be a positive "
                f"integer for YaRN, got {original!r}"
            )
        mpe = self.max_position_embeddings
        if original > mpe:
            raise ValueError(
                f"MoaiConfig.rope_scaling.original_max_position_embeddings ({original}) is larger "
                f"than max_position_embeddings ({mpe}): YaRN extends a shorter trained context"
            )
        if mpe > math.ceil(factor * original):
            raise ValueError(
                f"MoaiConfig.max_position_embeddings ({mpe}) exceeds what YaRN factor {factor} "
                f"reaches from original_max_position_embeddings {original} "
                f"({int(factor * original)}); raise rope_scaling.factor or lower max_position_embeddings"
            )
        for key in ("beta_fast", "beta_slow"):
            if key in rope and not (isinstance(rope[key], (int, float)) and rope[key] > 0):
                raise ValueError(f"MoaiConfig.rope_scaling.{key} must be > 0, got {rope[key]!r}")
        if rope.get("beta_fast", 32) <= rope.get("beta_slow", 1):
            raise ValueError("MoaiConfig.rope_scaling: beta_fast must be larger than beta_slow")

    def to_dict(self) -> dict[str, Any]:
        """Serialise as a stock Qwen3 config: MoaiForCausalLM is written as Qwen3ForCausalLM."""
        out = super().to_dict()
        archs = out.get("architectures")
        if archs:
            out["architectures"] = [
                "Qwen3ForCausalLM" if a in ("MoaiForCausalLM", "MoaiModel") else a for a in archs
            ]
        out.pop("auto_map", None)
        return out

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MoaiConfig:
        """Build the config of `presets/models/<name>.yaml`; keyword overrides win.

        MoaiConfig.from_preset("small", vocab_size=8192)
        """
        import yaml

        path = preset_path("models", name)
        if not path.is_file():
            raise ValueError(
                f"unknown model preset {name!r}; available: {', '.join(list_presets())}"
            )
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data.pop("description", None)
        data.update(overrides)
        return cls(**data)


def checked_config(data: dict[str, Any], where: str) -> MoaiConfig:
    """`MoaiConfig(**data)` with every value checked for type and range before anything is
    built, or a MoaiInputError (exit 2) naming `where` (the file) and the field.

    >>> checked_config({"num_hidden_layers": "2"}, "m.yaml")
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: m.yaml: num_hidden_layers must be an integer, got '2'
    >>> checked_config({"num_attention_heads": 4, "num_key_value_heads": 3, "hidden_size": 64}, "m.yaml")
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: m.yaml: num_key_value_heads: num_attention_heads (4) must be divisible by num_key_value_heads (3) for GQA
    """
    from huggingface_hub.errors import StrictDataclassError

    from moai_llm.errors import MoaiInputError

    if not isinstance(data, dict):
        raise MoaiInputError(f"{where}: expected a mapping of model settings, got {type(data).__name__}")
    for name in _INT_FIELDS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MoaiInputError(f"{where}: {name} must be an integer, got {value!r}")
    for name in ("rope_scaling", "rope_parameters"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise MoaiInputError(f"{where}: {name} must be a mapping (type, factor, ...), got {data[name]!r}")
    try:
        return MoaiConfig(**data)
    except (ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as exc:
        text = " ".join(str(exc).split()).replace("MoaiConfig.", "")
        if "Validation error for field" in text:
            text = text.split("Validation error for field", 1)[1].strip(" '").replace("':", ":", 1)
        raise MoaiInputError(f"{where}: {text}",
                             hint="fix the value in the file (`moai doctor --models` lists working configs)") from None


# Integer fields of a model config: a string or a float there is a mistake, not a size.
_INT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
               "loss_chunk_size")


def list_presets() -> list[str]:
    """Names of the model presets shipped in `presets/models/` (sorted by size, smallest first)."""
    return preset_names("models")


def parameter_count(config: Qwen3Config) -> int:
    """Exact number of parameters of `MoaiForCausalLM(config)` (tied embeddings counted once).

    parameter_count(MoaiConfig.from_preset("seed-3b"))   # 5,121,772,288
    """
    h, hd, v = config.hidden_size, config.head_dim, config.vocab_size
    q_out = config.num_attention_heads * hd
    kv_out = config.num_key_value_heads * hd
    bias = bool(getattr(config, "attention_bias", False))
    attn = h * q_out + 2 * h * kv_out + q_out * h + 2 * hd
    if bias:
        attn += q_out + 2 * kv_out + h
    mlp = 3 * h * config.intermediate_size
    layer = attn + mlp + 2 * h
    total = v * h + config.num_hidden_layers * layer + h
    if not config.tie_word_embeddings:
        total += v * h
    return total
