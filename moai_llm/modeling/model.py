"""MoaiModel and MoaiForCausalLM: the Qwen3 decoder, written for training speed and memory.

Architecture (Qwen3): token embeddings -> N x [RMSNorm -> GQA attention with QK-norm and RoPE
(YaRN optional) -> residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> lm_head (tied
or untied). Parameter names are transformers' (`model.layers.N.self_attn.q_proj`, ...), and
`MoaiConfig` saves as a Qwen3 config, so `save_pretrained` writes a directory that stock
`AutoModelForCausalLM` loads, and `from_pretrained` reads any transformers Qwen3 directory.

What moai adds over transformers' implementation:
- documents packed in one row (position_ids restarting at 0) never attend to each other, on
  every backend (flash-attn varlen, SDPA and eager block-diagonal masks);
- with `labels`, the loss is computed from the final hidden states by `model.loss_fn`
  (default: `moai_llm.losses.fused_linear_cross_entropy`, `chunk_size=config.loss_chunk_size`),
  so the [tokens, vocab] logits are never materialised; `logits` is None then;
- non-reentrant gradient checkpointing per decoder layer;
- FlexAttention for packed rows (`attn_implementation="flex_attention"`, see flex.py);
- `compile_blocks(model)`: regional `torch.compile` of the decoder blocks, names unchanged.

    model = MoaiForCausalLM(MoaiConfig.from_preset("tiny"))
    out = model(input_ids, labels=input_ids)        # out.loss, out.logits is None
    model.generate(input_ids, max_new_tokens=32)     # KV cache via transformers' DynamicCache
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from moai_llm.config import MoaiConfig
from moai_llm.modeling.activations import MoaiMLP
from moai_llm.modeling.attention import AttentionPlan, MoaiAttention, resolve_attn_implementation
from moai_llm.modeling.normalization import MoaiRMSNorm
from moai_llm.modeling.rope import MoaiRotaryEmbedding

LossFn = Callable[..., torch.Tensor]


class MoaiDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    # `compile_blocks` sets this to torch.compile(MoaiDecoderLayer.block): a plain attribute, so
    # parameter names and the state dict stay those of a stock Qwen3 model.
    compiled_block: Callable | None = None

    def __init__(self, config: MoaiConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = MoaiAttention(config, layer_idx)
        self.mlp = MoaiMLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = MoaiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MoaiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: AttentionPlan | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        if cache is None and self.compiled_block is not None:
            return self.compiled_block(self, hidden, cos, sin, plan)
        return self.block(hidden, cos, sin, plan, cache)

    def block(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: AttentionPlan | None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), cos, sin, plan, cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


def compile_blocks(model: nn.Module, **options) -> int:
    """Compile every decoder block of `model` with `torch.compile(**options)`; returns how many.

    Regional compilation: one graph per block, compiled once and reused by every layer (the
    blocks share their code and shapes), so compiling costs one block's time, not the whole
    model's. Works on a model wrapped by DDP, FSDP2 or peft (it looks for the blocks inside);
    module hooks (FSDP2's) and gradient checkpointing stay outside the compiled graph.
    Parameter names do not change (no `_orig_mod.` prefix), so checkpoints stay stock Qwen3
    and resume exactly. Decoding with a KV cache runs the blocks uncompiled.

    >>> from moai_llm.config import MoaiConfig
    >>> model = MoaiForCausalLM(MoaiConfig.from_preset("tiny"))
    >>> compile_blocks(model) == model.config.num_hidden_layers
    True
    """
    compiled = torch.compile(MoaiDecoderLayer.block, **options)
    count = 0
    for module in model.modules():
        if isinstance(module, MoaiDecoderLayer):
            module.compiled_block = compiled
            count += 1
    return count


class MoaiPreTrainedModel(PreTrainedModel):
    config_class = MoaiConfig
    config: MoaiConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MoaiDecoderLayer"]
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_sdpa = True
    _supports_attention_backend = False

    def _check_and_adjust_attn_implementation(
        self, attn_implementation: str | None, is_init_check: bool = False, **kwargs
    ) -> str:
        # moai dispatches attention itself: "auto" -> flash-attn -> flex -> SDPA, no hub kernels.
        return resolve_attn_implementation(attn_implementation)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MoaiRotaryEmbedding):
            # Buffers may come from the meta device when loading; recompute from the config.
            module.reset_inv_freq()

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **kwargs
    ):
        """Checkpoint every decoder layer, non-reentrant unless told otherwise."""
        options = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        self._activation_checkpointing_enable(options, **kwargs)


class MoaiModel(MoaiPreTrainedModel):
    """The decoder stack without the LM head (`model.` prefix in checkpoints)."""

    def __init__(self, config: MoaiConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            [MoaiDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = MoaiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MoaiRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("MoaiModel.forward: pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        cache = cache if cache is not None else past_key_values
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        b, t = inputs_embeds.shape[:2]
        past_len = cache.get_seq_length() if cache is not None else 0
        positions_given = position_ids is not None
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=inputs_embeds.device)[None]
        position_ids = position_ids.expand(b, -1)

        device_type = inputs_embeds.device.type
        compute_dtype = inputs_embeds.dtype
        if torch.is_autocast_enabled(device_type):
            # Mixed precision: fp32 weights, bf16/fp16 matmuls; flash-attn is usable then.
            compute_dtype = torch.get_autocast_dtype(device_type)
        plan = AttentionPlan.build(
            self.config._attn_implementation,
            position_ids,
            attention_mask,
            q_len=t,
            past_len=past_len,
            dtype=compute_dtype,
            may_be_packed=positions_given,
        )
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, cos, sin, plan=plan, cache=cache, use_cache=use_cache)
        hidden = self.norm(hidden)
        return BaseModelOutputWithPast(last_hidden_state=hidden, cache=cache if use_cache else None)


def default_loss_fn(chunk_size: int) -> LossFn:
    """`moai_llm.losses.fused_linear_cross_entropy` bound to `chunk_size` (looked up at call time)."""
    from moai_llm import losses

    return functools.partial(losses.fused_linear_cross_entropy, chunk_size=chunk_size)


class MoaiForCausalLM(MoaiPreTrainedModel, GenerationMixin):
    """Causal LM head over MoaiModel; interchangeable with transformers' Qwen3ForCausalLM."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MoaiConfig) -> None:
        super().__init__(config)
        self.model = MoaiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._loss_fn: LossFn | None = None
        self.post_init()

    @property
    def loss_fn(self) -> LossFn:
        """`loss_fn(hidden [N,H], weight [V,H], labels [N], num_items_in_batch) -> scalar`."""
        if self._loss_fn is not None:
            return self._loss_fn
        return default_loss_fn(self.config.loss_chunk_size)

    def __setattr__(self, name: str, value) -> None:
        if name == "loss_fn":
            # Stored plainly even when the loss is an nn.Module (not registered as a submodule,
            # so it never enters the state dict); None restores the default.
            self.__dict__["_loss_fn"] = value
            return
        super().__setattr__(name, value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (or, with `labels`, the loss from hidden states) for a batch.

        `labels` are not shifted (the model shifts them); -100 marks positions without loss.
        `logits_to_keep=k` returns logits of the last k positions only (generation uses 1).
        """
        if labels is not None and use_cache is None:
            use_cache = False  # a loss pass (training or evaluation) never continues decoding
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache=cache if cache is not None else past_key_values,
        )
        hidden = outputs.last_hidden_state
        loss = logits = None
        if labels is not None:
            # Shift by padding labels on the right: position i predicts labels[i + 1] and no
            # copy of the hidden states is made.
            shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            loss = self.loss_fn(
                hidden.reshape(-1, hidden.shape[-1]),
                self.lm_head.weight,
                shifted.reshape(-1).to(hidden.device),
                num_items_in_batch=num_items_in_batch,
            )
        else:
            if isinstance(logits_to_keep, int):
                kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
            else:
                kept = hidden[:, logits_to_keep]
            logits = self.lm_head(kept)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)
