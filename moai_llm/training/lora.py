"""LoRA through peft: low-rank adapters on a frozen base, saved small, merged into a stock model.

`apply_lora` wraps a model with peft's LoRA (`--lora-rank R --lora-alpha A --lora-dropout P
--lora-target all-linear|q_proj,v_proj,...`). When the vocabulary grew, the new tokens' rows
of the embedding (and of an untied lm_head) train too, through peft's `trainable_token_indices`:
the adapter then holds those rows only (new tokens x hidden), not whole matrices as
`modules_to_save` would. The adapter folder (checkpoints, final_adapter/) and merging are
moai_llm/adapters.py's, below training: chat, eval and export read adapters there.

QLoRA (`--lora-4bit`): the base is loaded with `quantization_config` (nf4 through bitsandbytes,
on CUDA and on the CPU); without bitsandbytes that is one MoaiInputError naming the extra.
`lora_memory_facts` counts trainable parameters from a config alone,
so the planner can size LoRA runs without building the model.

    >>> from moai_llm.config import MoaiConfig
    >>> facts = lora_memory_facts(MoaiConfig.from_preset("qwen3-4b"), rank=16)
    >>> facts["trainable"], facts["frozen"]
    (33030144, 4022468096)
"""

from __future__ import annotations

from typing import Any

from moai_llm.adapters import peft_quietly
from moai_llm.errors import MoaiInputError

ALL_LINEAR = "all-linear"
# The Linear layers of a Qwen3 decoder layer (transformers' names); "all-linear" is all of them
# (peft's all-linear never includes the output layer lm_head).
QWEN3_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _targets(target: str | list[str] | tuple[str, ...]) -> str | list[str]:
    if isinstance(target, str):
        if target.strip() == ALL_LINEAR:
            return ALL_LINEAR
        target = target.split(",")
    names = [t.strip() for t in target if t and t.strip()]
    if not names:
        raise MoaiInputError("--lora-target: no module names given", hint="use all-linear or e.g. q_proj,v_proj")
    return names


def _linear_names(model: Any) -> list[str]:
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name})


def _check_settings(rank: int, alpha: float | None, dropout: float) -> float:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise MoaiInputError(f"--lora-rank {rank}: must be a positive whole number", hint="e.g. --lora-rank 16")
    alpha = float(2 * rank if alpha is None else alpha)
    if alpha <= 0:
        raise MoaiInputError(f"--lora-alpha {alpha:g}: must be positive", hint="commonly 2 x --lora-rank")
    if not 0 <= dropout < 1:
        raise MoaiInputError(f"--lora-dropout {dropout}: must be in [0, 1)", hint="e.g. --lora-dropout 0.05")
    return alpha


def apply_lora(model: Any, rank: int, alpha: float | None = None, dropout: float = 0.0,
               target: str | list[str] = ALL_LINEAR, trainable_new_rows: range | list[int] | None = None) -> Any:
    """`model` wrapped by peft's LoRA; only the adapters (and the new rows) train.

    `alpha` defaults to 2 x rank. Target names that match no Linear module are refused with the
    names that exist. Returns the `PeftModel`.

        peft_model = apply_lora(model, rank=16, target="q_proj,v_proj", trainable_new_rows=range(151669, 152669))
    """
    from peft import LoraConfig, get_peft_model

    alpha = _check_settings(rank, alpha, dropout)
    targets = _targets(target)
    if targets != ALL_LINEAR:
        available = _linear_names(model)
        missing = [t for t in targets if t not in available]
        if missing:
            raise MoaiInputError(f"--lora-target {','.join(targets)}: {', '.join(missing)} matches no module; "
                                 f"the model's Linear modules are {', '.join(available)}",
                                 hint=f"use {ALL_LINEAR} or some of those names")
    tokens = None
    rows = list(trainable_new_rows or [])
    if rows:
        tokens = {"embed_tokens": rows}
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            tokens["lm_head"] = rows  # untied: the new tokens' output rows train as well
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM", trainable_token_indices=tokens)
    with peft_quietly():
        return get_peft_model(model, config)


def trainable_parameters(model: Any) -> int:
    """Parameters that train (adapter weights and new token rows under LoRA)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_memory_facts(config: Any, rank: int, target: str | list[str] = ALL_LINEAR, new_rows: int = 0) -> dict:
    """What the memory model needs for a LoRA run, from the config alone (nothing is built).

    Returns trainable (adapter parameters + new token rows; they get fp32 master weights,
    gradients and AdamW states), frozen (the base's parameters: weights only, no gradients,
    no optimizer states; they may be held in bf16, or 4-bit under QLoRA), the adapter's
    rank x tokens activations per layer (`activation_values_per_token_layer`: the r-wide
    intermediate of each adapted Linear, kept for backward) and the targets.
    """
    from moai_llm.config import parameter_count

    h, hd, inter = config.hidden_size, config.head_dim, config.intermediate_size
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    targets = _targets(target)
    names = list(QWEN3_LINEAR) if targets == ALL_LINEAR else targets
    missing = [t for t in names if t not in shapes]
    if missing:
        raise MoaiInputError(f"--lora-target {','.join(names)}: {', '.join(missing)} matches no module; the "
                             f"model's Linear modules are {', '.join(sorted(shapes) + ['lm_head'])}")
    per_layer = sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    rows = new_rows * h * (1 if tied else 2)
    return {"trainable": config.num_hidden_layers * per_layer + rows, "frozen": parameter_count(config),
            "adapter_parameters": config.num_hidden_layers * per_layer, "new_row_parameters": rows,
            "activation_values_per_token_layer": rank * len(names), "targets": names, "rank": rank}


def quantization_config(four_bit: bool, device: str) -> Any:
    """The `quantization_config` to load a QLoRA base with (None without --lora-4bit): nf4 with
    double quantisation, computing in bf16 on CUDA and in fp32 on the CPU (bitsandbytes' CPU
    kernels; measured in benchmarks/RESULTS.md)."""
    if not four_bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MoaiInputError("--lora-4bit needs bitsandbytes, which is not installed",
                             hint="pip install 'moai[qlora]'") from None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def is_4bit(model: Any) -> bool:
    """Whether `model` (peft-wrapped or not) holds bitsandbytes 4-bit layers."""
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())
