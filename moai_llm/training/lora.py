"""LoRA through peft: low-rank adapters on a frozen base, saved small, merged into a stock model.

`apply_lora` wraps a model with peft's LoRA (`--lora-rank R --lora-alpha A --lora-dropout P
--lora-target all-linear|q_proj,v_proj,...`). When the vocabulary grew, the new tokens' rows
of the embedding (and of an untied lm_head) train too, through peft's `trainable_token_indices`:
the adapter then holds those rows only (new tokens x hidden), not whole matrices as
`modules_to_save` would. Checkpoints hold the adapter (`adapter_state` / `load_adapter_state`);
the end of a run writes `merge` (a plain moai/Qwen3 model whose `save_pretrained` is a stock
Qwen3 folder) and `save_adapter` (the adapter alone, with what is needed to rebuild its base).

QLoRA (4-bit base weights through bitsandbytes) needs CUDA: `quantization_config(True, "cpu")`
is a clear `MoaiInputError`. `lora_memory_facts` counts trainable parameters from a config alone,
so the planner can size LoRA runs without building the model.

    >>> from moai_llm.config import MoaiConfig
    >>> facts = lora_memory_facts(MoaiConfig.from_preset("qwen3-4b"), rank=16)
    >>> facts["trainable"], facts["frozen"]
    (33030144, 4022468096)
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError, MoaiRunError

ALL_LINEAR = "all-linear"
# The Linear layers of a Qwen3 decoder layer (transformers' names); "all-linear" is all of them
# (peft's all-linear never includes the output layer lm_head).
QWEN3_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SIDE_FILE = "moai_adapter.json"  # base model and embedding rows, to rebuild the adapter's base


@contextlib.contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft asks a transformers model `is_gradient_checkpointing`, which transformers 5 answers
    with a FutureWarning a person can do nothing about; moai asks the new name itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


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
    with _peft_quietly():
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
    """The `quantization_config` to load a QLoRA base with (None without --lora-4bit)."""
    if not four_bit:
        return None
    if not str(device).startswith("cuda"):
        raise MoaiInputError("--lora-4bit needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on "
                             f"{device}", hint="drop --lora-4bit (plain LoRA works everywhere)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MoaiInputError("--lora-4bit needs bitsandbytes", hint="pip install 'moai[qlora]'") from None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def adapter_state(peft_model: Any) -> dict[str, Any]:
    """The adapter's tensors (what a checkpoint stores instead of the whole model)."""
    from peft import get_peft_model_state_dict

    # Never whole embedding matrices (peft would add them when the vocabulary was resized): the
    # new rows are in the adapter's trainable-token tensors.
    return get_peft_model_state_dict(peft_model, save_embedding_layers=False)


def load_adapter_state(peft_model: Any, state: dict[str, Any]) -> None:
    """Put checkpointed adapter tensors back; every adapter tensor must be there."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    params = dict(peft_model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in params if k not in set(getattr(result, "missing_keys", []))}
    # a tied lm_head's trainable rows are the embedding's (one tensor, saved once)
    missing = [k for k in getattr(result, "missing_keys", []) if ("lora_" in k or "trainable_tokens" in k)
               and not (k in params and params[k].data_ptr() in loaded)]
    if missing:
        raise MoaiRunError(f"the checkpoint's adapter lacks {len(missing)} tensors (first: {missing[0]})")


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def write_adapter(peft_model: Any, folder: str | os.PathLike, base_model: str | None = None) -> None:
    """The adapter's files into the existing `folder`: adapter_model.safetensors (the adapter's
    tensors alone, never whole embedding matrices), adapter_config.json and `moai_adapter.json`
    (base model and embedding rows, to rebuild the base). Checkpoints and final_adapter/ hold
    these."""
    from safetensors.torch import save_file

    folder = Path(folder)
    # copies: a tied lm_head shares its trainable rows with the embedding, and safetensors
    # refuses tensors that share memory
    state = {k: v.detach().to("cpu").clone() for k, v in adapter_state(peft_model).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = peft_model.peft_config["default"]
    base = str(base_model or config.base_model_name_or_path or "")
    config.save_pretrained(str(folder))  # adapter_config.json, as peft writes it
    data = json.loads((folder / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(data, indent=2) + "\n")
    rows = peft_model.get_input_embeddings().weight.shape[0]
    (folder / SIDE_FILE).write_text(json.dumps({"base_model": base, "vocab_rows": int(rows)}, indent=2) + "\n")


def read_adapter(peft_model: Any, folder: str | os.PathLike) -> None:
    """Put the tensors `write_adapter` wrote in `folder` back into `peft_model`."""
    from safetensors.torch import load_file

    load_adapter_state(peft_model, load_file(str(Path(folder) / ADAPTER_WEIGHTS)))


def save_adapter(peft_model: Any, output_dir: str | os.PathLike, base_model: str, tokenizer: Any = None) -> Path:
    """Write the adapter (`write_adapter`) and the tokenizer (a folder, copied, or an object,
    saved) into `output_dir`, complete or not at all; files follow the umask."""
    from moai_llm.atomic import building
    from moai_llm.training.checkpoint import follow_umask, save_tokenizer

    out = Path(output_dir)
    with building(out) as tmp:
        write_adapter(peft_model, tmp, base_model)
        save_tokenizer(tokenizer, tmp)
        follow_umask(tmp)
    return out


def merge(peft_model: Any) -> Any:
    """The base model with the adapter folded in: a plain model (no peft modules or key prefixes)."""
    merged = peft_model.merge_and_unload()
    bad = [k for k in merged.state_dict() if "lora_" in k or "base_layer" in k or "base_model.model" in k
           or "token_adapter" in k]
    if bad:
        raise MoaiRunError(f"merging the adapter left peft names in the model ({bad[0]})")
    return merged


def is_adapter_dir(folder: str | os.PathLike) -> bool:
    """True for a folder written by `save_adapter` (or any peft LoRA adapter folder)."""
    return (Path(folder) / "adapter_config.json").is_file()


def load_adapter_model(adapter_dir: str | os.PathLike, dtype: Any = None, trust_remote_code: bool = False,
                       merged: bool = True) -> Any:
    """The adapter's base (rebuilt: loaded, embedding grown to the adapter's rows) with the
    adapter on top, merged into a plain model unless `merged=False`."""
    import torch
    from peft import PeftModel

    from moai_llm.pretrained import load_model as load_base
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.tokenizer.model_vocab import grow_embeddings

    folder = Path(adapter_dir)
    if not (folder / "adapter_model.safetensors").is_file():
        raise MoaiInputError(f"{folder}: no adapter_model.safetensors (moai loads safetensors adapters only)")
    side = json.loads((folder / SIDE_FILE).read_text()) if (folder / SIDE_FILE).is_file() else {}
    base_name = side.get("base_model") or json.loads((folder / "adapter_config.json").read_text()).get(
        "base_model_name_or_path")
    if not base_name:
        raise MoaiInputError(f"{folder}: the adapter does not say which base model it belongs to",
                             hint=f"add {SIDE_FILE} with base_model")
    base = resolve_pretrained(base_name, trust_remote_code=trust_remote_code)
    model = load_base(base, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    rows = int(side.get("vocab_rows") or 0)
    if rows > model.get_input_embeddings().weight.shape[0]:
        grow_embeddings(model, rows, "mean")  # new tokens' rows come from the adapter itself
    with _peft_quietly():
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    return merge(peft_model) if merged else peft_model
