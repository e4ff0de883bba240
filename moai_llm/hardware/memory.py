"""Memory model of one training process: bytes for weights, gradients, AdamW, activations, loss,
DDP buckets / FSDP2 shards, CUDA context and allocator reserve.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.memory import estimate
    >>> config = MoaiConfig.from_preset("0.5b")      # only read, no weights are built
    >>> est = estimate(config, seq_len=1024, micro_batch=8, precision="bf16")
    >>> round(est.peak_allocated / 2**30, 1), round(est.peak_reserved / 2**30, 1)   # GiB
    (27.7, 29.3)

Training is autocast over fp32 master weights with fused AdamW (moai_llm/training), so the
static part is 4 (weights) + 4 (grads) + 8 (exp_avg, exp_avg_sq) = 16 bytes per parameter, plus
a bf16 copy of every matmul weight that autocast keeps for backward.

Activations are counted tensor by tensor from the Qwen3 decoder layer as transformers and
moai run it (what autograd saves for backward), per token, with H hidden, q = heads*head_dim,
kv = kv_heads*head_dim, I intermediate, nh heads:

    bf16 autocast: 18H + 10q + 10kv + 8I + 8nh + 4nkv + 8   (the residual stream stays fp32:
                   embeddings are fp32 and bf16 + fp32 promotes; each of q/k/v/gate/up casts
                   its input to bf16 again)
    fp32:          16H + 12q + 12kv + 16I + 8nh + 4nkv + 8
    packed rows (SDPA with a document mask): + 2e(q - kv) + e*seq_len (e = 2 bf16, 4 fp32)
    packed rows (SDPA over a band, tile x window): + 2e(q*window/tile - kv) + e*window
    packed rows (FlexAttention, flash-attn varlen): + 0 (no mask, GQA without copies)
    checkpointing: 4H per layer (the fp32 layer input) + one layer recomputed during backward

These were exact for MoaiDecoderLayer on CPU when written (tests/hardware/test_memory.py
counts the bytes autograd saves with saved_tensors_hooks and allows 10% for later changes of
the model code); CUDA's SDPA/flash kernels save the same q, k, v, output and logsumexp.

Attention through FlexAttention, flash-attn or SDPA's causal kernel saves q, k, v, output and
a logsumexp per head: no seq_len^2 term. On the CPU, packed rows go through SDPA with a dense
mask or a band of key tiles (modeling/banded.py), chosen per batch by its documents; the plan
counts the larger of the two ("sdpa-banded"). The loss is moai's fused linear cross-entropy (losses.py): it keeps grad_hidden
(4H per token) and an fp32 lm_head gradient (4VH) from forward to backward, and one chunk of
logits (C x V, ~8 bytes per entry) at a time; full logits would cost ~16V bytes per token.

The estimate is the steady state: gradients exist during forward (accumulation > 1) and the
AdamW states exist (after the first step). tests/hardware/test_memory.py checks it against the
measured peak on CPU; benchmarks/bench_memory_gpu.py against torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from moai_llm.hardware.quantized import qlora_frozen_bytes

MIB = 1024**2
GIB = 1024**3
CUDA_CONTEXT_BYTES = 640 * MIB  # 500-800 MiB measured on Ampere/Hopper with torch's kernels loaded
NCCL_BUFFER_BYTES = 512 * MIB  # NCCL channel buffers and communicator state per process (approx.)
ALLOCATOR_RESERVE = 0.05  # caching-allocator slack over allocated, with expandable_segments
ALLOCATOR_RESERVE_NO_EXPANDABLE = 0.12


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a MoaiConfig / Qwen3Config / dict with the transformers field names."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        return cls(
            hidden=hidden,
            intermediate=int(get("intermediate_size")),
            layers=int(get("num_hidden_layers")),
            heads=heads,
            kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            vocab=int(get("vocab_size")),
            tied=bool(get("tie_word_embeddings", False)),
        )

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        h, q, kv = self.hidden, self.q, self.kv
        return h * q + 2 * h * kv + q * h + 2 * self.head_dim + 3 * h * self.intermediate + 2 * h

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Exact parameter count of the Qwen3 model (no biases, QK-norm, optional tied head)."""
        head = 0 if self.tied else self.embed_params
        return self.embed_params + self.layers * self.layer_params + self.hidden + head

    @property
    def matmul_params(self) -> int:
        """Parameters autocast casts to bf16 for matmuls (the layers' linears and lm_head)."""
        h, q, kv = self.hidden, self.q, self.kv
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate
        return self.layers * per_layer + self.embed_params

    def summary(self) -> str:
        n = self.params
        size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
        return f"{size} params (H {self.hidden}, {self.layers} layers, vocab {self.vocab})"


ATTENTION_KINDS = ("sdpa", "sdpa-packed", "flash", "sdpa-math", "flex", "sdpa-banded")
# The rules of moai_llm.modeling.banded (a test checks they agree): the query tiles it tries, a
# window of at most a quarter of the row and at most BAND_MAX_COPY tiles long.
BAND_TILES = (128, 64, 32, 16)
BAND_WINDOW_FRACTION = 4
BAND_MAX_COPY = 4


def band_choices(seq_len: int) -> list[tuple[int, int]]:
    """Every (tile, window) banded SDPA may pick for rows of `seq_len` tokens (the documents
    of each batch decide which); [] when no band is possible.

    >>> band_choices(256)
    [(64, 64), (32, 32), (32, 64), (16, 16), (16, 32), (16, 64)]
    """
    found = []
    for tile in BAND_TILES:
        window = tile
        while not seq_len % tile and window <= min(BAND_MAX_COPY * tile,
                                                   seq_len // BAND_WINDOW_FRACTION):
            found.append((tile, window))
            window *= 2
    return found


def _packed_sdpa_extra(shape: ModelShape, e: int, seq_len: int, attention: str,
                       band: tuple[int, int] | None = None) -> int:
    """Bytes per token SDPA over packed rows keeps beyond the causal kernel's q, k, v, out:
    the dense mask path repeats k/v per query head and keeps a float copy of the T x T mask
    (seq_len values per token); the banded path keeps each tile's key/value window (window /
    tile copies of every head) and a float copy of the band mask (window values per token).
    "sdpa-banded" (CPU training, where the data decides per step between the two) counts the
    larger of the dense path and the widest band, or exactly `band` (tile, window) when given."""
    q, kv = shape.q, shape.kv
    if attention == "sdpa-banded" and band is not None:
        tile, window = band
        return 2 * e * (q * window // tile - kv) + e * window
    dense = 2 * e * (q - kv) + e * seq_len
    bands = band_choices(seq_len) if attention == "sdpa-banded" else []
    return max([dense] + [2 * e * (q * window // tile - kv) + e * window for tile, window in bands])


def activation_bytes_per_token_layer(shape: ModelShape, precision: str = "bf16",
                                     attention: str = "sdpa", seq_len: int = 0,
                                     band: tuple[int, int] | None = None) -> int:
    """Bytes autograd keeps per token for one decoder layer without checkpointing.

    attention: "sdpa" (rows without document boundaries: causal SDPA, native GQA),
    "sdpa-packed" (packed rows without flash-attn: a block-diagonal mask, which makes moai
    repeat k/v for every query head and SDPA keep a float copy of the mask, seq_len values per
    token), "sdpa-banded" (the CPU's SDPA over packed rows: the dense mask or, for short
    documents, a band of key tiles; the larger of the two, `_packed_sdpa_extra`), "flex"
    (FlexAttention with a document block mask: the kernel saves q, k, v, out and logsumexp as
    SDPA's causal kernel does, GQA without copies, no T x T mask; the block mask is a few
    integers per 128 x 128 block), "flash" (flash-attn installed, bf16: its fused RMSNorm keeps
    q/k in bf16 and the kernel saves q, k, v, out and logsumexp; varlen for packed rows adds
    nothing — derived from the code, not yet measured on a GPU), "sdpa-math" (fp32 on CUDA with GQA: no fused kernel
    takes fp32 + enable_gqa, so SDPA falls back to its math path, which keeps the attention
    probabilities, heads x seq_len x 4 bytes per token, and repeated k/v — an assumption not
    yet measured on a GPU, made so fp32 plans err on the safe side).
    """
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    h, q, kv, i = shape.hidden, shape.q, shape.kv, shape.intermediate
    stats = 8 * shape.heads + 4 * shape.kv_heads + 8  # logsumexp and RMSNorm rstd per token
    e = 2 if precision == "bf16" else 4  # bytes per element of the matmul dtype
    if precision == "bf16":
        if attention == "flash":
            return 18 * h + 6 * q + 6 * kv + 8 * i + stats
        base = 18 * h + 10 * q + 10 * kv + 8 * i + stats
    else:
        base = 16 * h + 12 * q + 12 * kv + 16 * i + stats
    if attention in ("sdpa-packed", "sdpa-banded"):
        base += _packed_sdpa_extra(shape, e, seq_len, attention, band)
    if attention == "sdpa-math":
        base += 2 * e * (q - kv) + e * shape.heads * seq_len
    return base


def saved_activation_bytes(shape: ModelShape, tokens: int, precision: str = "bf16",
                           checkpointing: bool = False, attention: str = "sdpa",
                           seq_len: int = 0) -> int:
    """Activations autograd holds at the end of forward for `tokens` tokens (micro batch x seq
    len): every layer's saved tensors (or, with checkpointing, each layer's fp32 input), plus
    the final norm, the token ids and (packed rows with SDPA) the boolean document mask."""
    outer = (8 * shape.hidden + 8) * tokens  # final norm input + normalised, token ids (int64)
    if attention in ("sdpa-packed", "sdpa-banded"):
        outer += seq_len * tokens  # bool [B, 1, T, T] (a band's bool mask is smaller: window)
    if checkpointing:
        return shape.layers * 4 * shape.hidden * tokens + outer
    per_layer = activation_bytes_per_token_layer(shape, precision, attention, seq_len)
    return shape.layers * per_layer * tokens + outer


def backward_working_bytes(shape: ModelShape, tokens: int, precision: str = "bf16",
                           checkpointing: bool = False, attention: str = "sdpa",
                           seq_len: int = 0) -> int:
    """Transient memory of backward: one layer's gradients (and its recomputed activations with
    checkpointing)."""
    layer = activation_bytes_per_token_layer(shape, precision, attention, seq_len) * tokens
    return 2 * layer if checkpointing else layer


def lora_activation_bytes_per_token_layer(shape: ModelShape, lora: dict[str, Any],
                                          precision: str = "bf16") -> int:
    """Bytes LoRA adds per token and layer to what the frozen layer keeps (it keeps the same:
    backward still needs every input gradient): each adapted Linear's rank-wide intermediate
    (rank x targets values, 2 bytes under bf16 autocast, 4 in fp32) and, with dropout, a
    dropped copy of each adapted Linear's input (4 bytes a value under bf16 autocast, 6 in fp32,
    rounding up what was measured). Measured on CPU with saved_tensors_hooks
    (tests/hardware/test_memory.py): exact in fp32; in bf16 a frozen layer keeps H bytes less,
    left uncounted."""
    e = 2 if precision == "bf16" else 4
    extra = e * int(lora.get("activation_values_per_token_layer", 0))
    if lora.get("dropout"):
        inputs = {"q_proj": shape.hidden, "k_proj": shape.hidden, "v_proj": shape.hidden,
                  "o_proj": shape.q, "gate_proj": shape.hidden, "up_proj": shape.hidden,
                  "down_proj": shape.intermediate}
        extra += (4 if precision == "bf16" else 6) * sum(inputs.get(t, shape.hidden) for t in lora.get("targets", ()))
    return extra


def _lora_static(shape: ModelShape, lora: dict[str, Any], bf16: bool) -> tuple[int, int, int, int]:
    """(weights, gradients, optimizer, autocast copies) of a LoRA run: the frozen base holds its
    weights only (the decoder layers in bf16 when `frozen_dtype` is bf16, the rest fp32; in NF4
    when it is nf4, the rest in the compute dtype); the
    trainable tensors (adapters, new token rows) have fp32 weights, gradients and AdamW states."""
    trainable, frozen = int(lora["trainable"]), int(lora["frozen"])
    if lora.get("frozen_dtype") == "nf4":  # QLoRA (quantized.py): autocast copies of the adapters only
        held, dequantized = qlora_frozen_bytes(shape, frozen, bf16)
        return (held + 4 * trainable, 4 * trainable, 8 * trainable,
                (2 if bf16 else 0) * int(lora.get("adapter_parameters", trainable)) + dequantized)
    layers = shape.layers * shape.layer_params
    held = 2 * layers + 4 * (frozen - layers) if lora.get("frozen_dtype") == "bf16" else 4 * frozen
    cast = 0
    if bf16:  # autocast's bf16 copies of the adapters and lm_head (and of fp32-held layers)
        cast = 2 * int(lora.get("adapter_parameters", trainable)) + 2 * shape.embed_params
        if lora.get("frozen_dtype") != "bf16":
            cast += 2 * (shape.matmul_params - shape.embed_params)
    return held + 4 * trainable, 4 * trainable, 8 * trainable, cast


def loss_bytes(shape: ModelShape, tokens: int, chunk_size: int | None,
               precision: str = "bf16") -> tuple[int, int]:
    """(kept from forward to backward, transient while a chunk is computed) of the loss.

    Fused chunked linear CE (losses.py): grad_hidden (4H/token) and the fp32 lm_head gradient
    (4VH) are kept; one chunk of logits is transient (fp32: 4 bytes per entry; bf16: the bf16
    product, its fp32 copy and the bf16 gradient, 6 bytes, plus a bf16 V x H product and the
    bf16 weight copy). chunk_size None: full logits (bf16 -> fp32 -> saved log-softmax, and
    their gradients), about 16V bytes per token.
    """
    v, h = shape.vocab, shape.hidden
    if chunk_size is None:
        return tokens * v * (2 + 4 + 4), tokens * v * (4 + 2)
    chunk = min(chunk_size, tokens)
    if precision == "bf16":
        return 4 * h * tokens + 4 * v * h, 6 * chunk * v + 2 * v * h + 2 * v * h
    return 4 * h * tokens + 4 * v * h, 4 * chunk * v


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    autocast_weights: int  # bf16 weight copies kept by autocast (or FSDP2's gathered layers)
    activations: int
    loss: int
    distributed: int  # DDP gradient buckets, or 0
    cuda_context: int  # not in max_memory_allocated; nvidia-smi shows it
    nccl: int
    allocator_reserve: int
    details: dict[str, Any]

    @property
    def peak_allocated(self) -> int:
        """What torch.cuda.max_memory_allocated() should read at the steady-state peak."""
        return (self.weights + self.gradients + self.optimizer + self.autocast_weights
                + self.activations + self.loss + self.distributed)

    @property
    def peak_reserved(self) -> int:
        """Everything the process holds on the device (what nvidia-smi shows)."""
        return self.peak_allocated + self.allocator_reserve + self.cuda_context + self.nccl

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_allocated"] = self.peak_allocated
        d["peak_reserved"] = self.peak_reserved
        return d

    def rows(self) -> list[tuple[str, int]]:
        """(component, bytes) for a table, largest first."""
        names = ["weights", "gradients", "optimizer", "autocast_weights", "activations", "loss",
                 "distributed", "allocator_reserve", "cuda_context", "nccl"]
        return [(n, getattr(self, n)) for n in names if getattr(self, n)]


def estimate(
    config: Any,
    seq_len: int,
    micro_batch: int,
    *,
    precision: str = "bf16",
    gradient_checkpointing: bool = False,
    loss_chunk_size: int | None = 4096,
    strategy: str = "single",
    world_size: int = 1,
    device: str = "cuda",
    expandable_segments: bool = True,
    attention: str = "sdpa",
    lora: dict[str, Any] | None = None,
) -> MemoryEstimate:
    """Peak memory of one process training `config` at micro batch x seq_len tokens.

    strategy "ddp" adds gradient-sized bucket copies (DDP's default, gradient_as_bucket_view
    off); "fsdp2" divides weights, gradients and AdamW states by world_size and adds the
    all-gathered units (root + two decoder layers, params + fp32 gradients). `attention`: see
    `activation_bytes_per_token_layer`. `lora` (training/lora.py `lora_memory_facts` with the
    plan's `frozen_dtype`): a frozen base with trainable adapters (`_lora_static`, and
    `lora_activation_bytes_per_token_layer` more activations per layer).
    """
    shape = config if isinstance(config, ModelShape) else ModelShape.from_config(config)
    p, tokens = shape.params, micro_batch * seq_len
    bf16 = precision == "bf16"
    weights, grads, optim = 4 * p, 4 * p, 8 * p
    cast = 2 * shape.matmul_params if bf16 else 0
    dist = 0
    if strategy == "fsdp2" and world_size > 1:
        weights, grads, optim = (math.ceil(x / world_size) for x in (weights, grads, optim))
        # Gathered (unsharded) params + their fp32 gradients before reduce-scatter: the root
        # unit (embeddings, lm_head, final norm) stays gathered through forward and backward;
        # decoder layers are gathered one at a time with one more prefetched.
        root = shape.embed_params * (1 if shape.tied else 2) + shape.hidden
        cast = (root + 2 * shape.layer_params) * ((2 if bf16 else 4) + 4)
    elif strategy == "ddp" and world_size > 1:
        dist = 4 * p
    if lora:
        weights, grads, optim, cast = _lora_static(shape, lora, bf16)
        dist = 4 * int(lora["trainable"]) if strategy == "ddp" and world_size > 1 else 0
    # Peak = saved activations + what the loss keeps + the larger of the two transients (a
    # chunk of logits at the end of forward, one layer's gradients during backward): they never
    # coexist. The larger one is reported under its own name.
    saved = saved_activation_bytes(shape, tokens, precision, gradient_checkpointing, attention, seq_len)
    working = backward_working_bytes(shape, tokens, precision, gradient_checkpointing, attention,
                                     seq_len)
    kept, chunk = loss_bytes(shape, tokens, loss_chunk_size, precision)
    if lora:
        adapted = lora_activation_bytes_per_token_layer(shape, lora, precision) * tokens
        saved += (0 if gradient_checkpointing else shape.layers * adapted)
        working += adapted
        # lm_head frozen: no 4VH weight gradient; new rows training: peft's merged V x H copy
        # (fp32) and its gradient instead
        head = 4 * shape.vocab * shape.hidden
        kept += head if lora.get("new_row_parameters") else -head
    act = saved + (working if working > chunk else 0)
    loss = kept + (chunk if chunk >= working else 0)
    on_gpu = device == "cuda"
    reserve_frac = ALLOCATOR_RESERVE if expandable_segments else ALLOCATOR_RESERVE_NO_EXPANDABLE
    dynamic = act + loss + cast
    return MemoryEstimate(
        weights=weights, gradients=grads, optimizer=optim, autocast_weights=cast,
        activations=act, loss=loss, distributed=dist,
        cuda_context=CUDA_CONTEXT_BYTES if on_gpu else 0,
        nccl=NCCL_BUFFER_BYTES if on_gpu and world_size > 1 else 0,
        allocator_reserve=int(reserve_frac * dynamic) if on_gpu else 0,
        details={
            "params": p, "tokens": tokens, "precision": precision, "strategy": strategy,
            "world_size": world_size, "gradient_checkpointing": gradient_checkpointing,
            "loss_chunk_size": loss_chunk_size,
            "attention": attention,
            "activation_bytes_per_token_layer": activation_bytes_per_token_layer(
                shape, precision, attention, seq_len),
            "lora": bool(lora),
        },
    )


def fmt_bytes(n: float) -> str:
    """"12.3 GiB" / "512 MiB"."""
    if abs(n) >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / MIB:.0f} MiB"
