"""Model and optimizer for training (processes and sharding: distributed.py).

- The model keeps fp32 master weights (autocast gives bf16 compute where the plan says so;
  never a whole-model cast) and is built with the plan's attention backend and loss chunk,
  the ones the plan's memory estimate assumed. New models take their vocabulary size from the
  tokenizer, rounded up to a multiple of `vocab_multiple`; SFT grows the embeddings of a
  pretrained model when its tokenizer has grown (training/adaptation.py).
- AdamW is the fused kernel where torch has one for the device, foreach otherwise; weight
  decay applies to matrices only (not norms or biases).

    >>> import torch
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.plan import Plan
    >>> from moai_llm.training.settings import resolve_settings
    >>> settings, _ = resolve_settings("pretrain", flags={"model": "tiny"})
    >>> model_config = MoaiConfig.from_preset("tiny").to_dict()
    >>> plan = Plan(seq_len=64, attention="eager", loss_chunk_size=512)   # run.yaml's, in a run
    >>> model = build_model(settings, model_config, None, plan)   # tokenizer, base, growth: for a base model
    >>> model.config._attn_implementation, model.config.loss_chunk_size
    ('eager', 512)
    >>> optimizer = build_optimizer(model, settings, torch.device("cpu"))
    >>> type(model).__name__, optimizer_kind(optimizer) in ("fused", "foreach")
    ('MoaiForCausalLM', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moai_llm.defaults import SAMPLING
from moai_llm.errors import MoaiInputError
from moai_llm.hardware.plan import Plan


def build_model(settings: Any, model_config: dict | None, tokenizer: Any, plan: Plan,
                base: Any = None, growth: Any = None) -> torch.nn.Module:
    """A MoaiForCausalLM in fp32, from the base model folder `base` (a resolved.BaseModel: the
    launcher checked it) grown as `growth` says, or from `model_config`, with the plan's
    attention backend (`attn_implementation`) and loss chunk."""
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    if base is not None:
        if not Path(base.path).is_dir():  # a worker on a node that cannot see the launcher's folder
            raise MoaiInputError(f"--pretrained-model {base.name}: {base.path} is not a folder on this machine",
                                 hint="put the model in a folder every node can read, and name that folder")
        model = MoaiForCausalLM.from_pretrained(base.path, dtype=torch.float32,
                                                attn_implementation=plan.attention,
                                                use_safetensors=True, trust_remote_code=False,
                                                **_four_bit(settings, plan))
        from moai_llm.weights import non_finite_tensor

        bad = non_finite_tensor(model.named_parameters())  # the folder's check read headers only
        if bad is not None:
            raise MoaiInputError(f"--pretrained-model {base.name}: tensor {bad} holds NaN/inf "
                                 "values (a broken model)", hint="train from an earlier checkpoint or download it again")
        from moai_llm.training.adaptation import grow

        grow(model, growth, base, tokenizer)  # a grown tokenizer's rows (--new-embeddings)
    else:
        if model_config is None:
            raise MoaiInputError("no model: pass --model PRESET, --model-config FILE or --pretrained-model DIR")
        model = MoaiForCausalLM(MoaiConfig(**{**model_config, "attn_implementation": plan.attention}))
        model.to(torch.float32)
    model.config.use_cache = False
    model.config.loss_chunk_size = int(plan.loss_chunk_size)
    loss = settings.loss or {}
    if loss.get("type", "cross_entropy") not in ("cross_entropy", "ce", None):
        from moai_llm.losses import create_loss_function

        model.loss_fn = create_loss_function(loss)
    return model


def _four_bit(settings: Any, plan: Plan) -> dict[str, Any]:
    """QLoRA (--lora-4bit): from_pretrained's arguments to load the decoder's Linears in nf4 on
    this process's device (lm_head, embeddings and norms stay as they are)."""
    if not getattr(settings, "lora_4bit", False):
        return {}
    from moai_llm.training.lora import quantization_config

    device = f"cuda:{torch.cuda.current_device()}" if plan.device.startswith("cuda") else "cpu"
    return {"quantization_config": quantization_config(True, plan.device), "device_map": {"": device}}


def build_optimizer(model: torch.nn.Module, settings: Any, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over trainable parameters: decay for matrices, none for norms/biases; fused if possible."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2),
                  eps=settings.adam_epsilon)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype/DTensor
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    d = optimizer.defaults
    return "fused" if d.get("fused") else ("foreach" if d.get("foreach") else "for-loop")


def generation_config_for(tokenizer: Any, model_dir: str | None = None):
    """The generation config of `model_dir` (a --pretrained-model folder: its own is kept), or
    moai's chat defaults: stop at <|im_end|> or <|endoftext|>, pad with <|pad|>."""
    from transformers import GenerationConfig

    if model_dir is not None and (Path(model_dir) / "generation_config.json").is_file():
        try:
            return GenerationConfig.from_pretrained(model_dir)
        except (ValueError, TypeError, OSError) as exc:
            raise MoaiInputError(f"--pretrained-model {model_dir}: generation_config.json: "
                                 f"{' '.join(str(exc).split())[:200]}",
                                 hint="fix or delete that file (moai writes its chat defaults then)") from None

    from moai_llm.tokenizer.special import ENDOFTEXT, IM_END, PAD

    ids = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT, PAD])
    unk = tokenizer.unk_token_id
    eos = [i for i in ids[:2] if i is not None and i != unk]
    pad = ids[2] if ids[2] is not None and ids[2] != unk else tokenizer.pad_token_id
    return GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None, do_sample=True, **SAMPLING)
