"""What a run does to the model it starts from: grow its vocabulary, train it in stages, or
train LoRA adapters on it.

Decided once, in the launching process, before the output folder is touched (`growth_for`,
`decide`: bad combinations are refused there with one line), recorded in run.yaml
(`derived.embedding_growth`, `plan.lora`), and applied by every training process in the same
order from that record (`grow`, `with_lora`, `hold_frozen`):

1. **Growth.** When the run's tokenizer has more tokens than the `--pretrained-model` folder's
   own, the new tokens' rows of the embedding (and of an untied lm_head) start as
   `--new-embeddings pieces` (the mean of the rows of the pieces the base tokenizer splits
   each new token into) or `mean` (the mean of all old rows); rows are added when the matrix is
   too small (rounded up to `--vocab-multiple`), never removed (Qwen's padding rows are kept).
   Growth is a pure function of the two tokenizers, the folder and the settings, so a resumed
   run (whose launch decides it again) grows exactly as the run it continues before the
   checkpoint's weights are loaded.
2. **Stages** (`--stages new-embeddings:N,all`, training/stages.py): only the new rows train
   for N steps, then everything. Refused without new rows.
3. **LoRA** (`--lora-rank`, training/lora.py): peft adapters on the frozen base, with the new
   rows trainable when the vocabulary grew. Where the plan computes in bf16, the decoder layers'
   frozen weights are held in bf16 (`plan.lora["frozen_dtype"]`); embeddings, lm_head and the
   final norm stay fp32, so the residual stream is fp32 as in full training.

    >>> from types import SimpleNamespace
    >>> from moai_llm.training.settings import resolve_settings
    >>> s, _ = resolve_settings("pretrain", flags={"pretrained_model": "base", "new_embeddings": "pieces"})
    >>> folder = SimpleNamespace(vocab_rows=151936, tokenizer_size=151669)
    >>> g = growth_for(s, 151669 + 2000, folder)
    >>> g.rows_before, g.rows_after, g.new_rows, g.method
    (151936, 153728, range(151669, 153669), 'pieces')
    >>> growth_for(s, 151669, folder) is None      # the folder's own tokenizer: nothing grows
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from moai_llm.errors import MoaiInputError

LORA_EXTRA = "pip install 'moai[lora]'"


@dataclass(frozen=True)
class Growth:
    """How a run grows its base model's vocabulary."""

    base_tokens: int   # tokens of the base model's tokenizer (new ids start here)
    tokens: int        # tokens of the run's tokenizer
    rows_before: int   # embedding rows of the base model
    rows_after: int    # embedding rows after growing (never fewer than before)
    method: str        # "pieces" | "mean"

    @property
    def new_rows(self) -> range:
        """The ids of the tokens the tokenizer added."""
        return range(self.base_tokens, self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        rows = (f"{self.rows_before} → {self.rows_after} rows" if self.rows_after > self.rows_before
                else f"{self.rows_before} rows kept (the new tokens take padding rows)")
        how = ("the mean of the rows of their base-tokenizer pieces" if self.method == "pieces"
               else "the mean of the old rows")
        return (f"the tokenizer grew from {self.base_tokens} to {self.tokens} tokens: {rows}; "
                f"tokens {self.base_tokens}..{self.tokens - 1} start as {how} (--new-embeddings {self.method})")


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple` (embedding rows: --vocab-multiple)."""
    multiple = max(1, int(multiple or 1))
    return ((n + multiple - 1) // multiple) * multiple


def growth_for(s: Any, tokenizer_size: int, folder: Any) -> Growth | None:
    """The growth of the `--pretrained-model` `folder` (a moai_llm.pretrained.Pretrained) for a
    tokenizer of `tokenizer_size` tokens, or None when nothing grows. Without a tokenizer in the
    folder, rows grow (their mean) only when the tokenizer outgrows the matrix."""
    if folder is None:
        return None
    rows = int(folder.vocab_rows)
    base = folder.tokenizer_size
    if base is None:
        if tokenizer_size <= rows:
            return None
        return Growth(rows, tokenizer_size, rows, round_up(tokenizer_size, s.vocab_multiple), "mean")
    if tokenizer_size <= base:
        return None
    return Growth(int(base), tokenizer_size, rows, max(rows, round_up(tokenizer_size, s.vocab_multiple)),
                  s.new_embeddings)


def decide(s: Any, growth: Growth | None) -> None:
    """Refuse, before anything is written, what cannot work: stages without new rows, stages
    with LoRA, LoRA without peft or with targets the model does not have."""
    from moai_llm.training.stages import parse_stages

    if s.stages and s.lora_rank is not None:
        raise MoaiInputError(f"--stages {s.stages} with --lora-rank {s.lora_rank}: LoRA already freezes the base "
                             "and trains the new rows with the adapters",
                             hint="drop --stages for a LoRA run (or drop --lora-rank to train in stages)")
    if s.stages:
        parse_stages(s.stages, growth.new_rows if growth else None, s.max_steps)
    if s.lora_rank is None:
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise MoaiInputError(f"--lora-rank {s.lora_rank}: LoRA needs peft, which is not installed",
                             hint=LORA_EXTRA) from None


def lora_facts(s: Any, config: Any, growth: Growth | None) -> dict[str, Any] | None:
    """What the planner needs to size a LoRA run (None without --lora-rank): trainable and
    frozen parameters and adapter activations (lora.lora_memory_facts), and the dropout; the
    planner adds the frozen weights' dtype."""
    if s.lora_rank is None:
        return None
    from moai_llm.training.lora import lora_memory_facts

    facts = lora_memory_facts(config, s.lora_rank, s.lora_target, new_rows=len(growth.new_rows) if growth else 0)
    facts["dropout"] = float(s.lora_dropout)
    facts["base_4bit"] = bool(s.lora_4bit)  # QLoRA: the planner holds the frozen base in nf4
    return facts


def check_4bit(s: Any, plan: Any) -> None:
    """--lora-4bit (QLoRA): bitsandbytes must be installed (lora.quantization_config says so in
    one line, naming the extra), before anything is written."""
    if not s.lora_4bit:
        return
    from moai_llm.training.lora import quantization_config

    quantization_config(True, plan.device)


def grow(model: Any, growth: Growth | None, base: Any, tokenizer: Any) -> None:
    """Grow `model` (built from the base model folder `base`: a resolved.BaseModel) as the
    launcher decided (`growth`, recorded in run.yaml); nothing when it does not grow."""
    if growth is None:
        return
    from moai_llm.tokenizer.model_vocab import grow_embeddings

    pieces = base.tokenizer_dir if base.tokenizer_size is not None else None
    grow_embeddings(model, growth.rows_after, growth.method, base_tokenizer=pieces,
                    new_tokenizer=tokenizer if pieces is not None else None)


def with_lora(model: Any, s: Any, growth: Growth | None) -> Any:
    """`model` wrapped with peft's LoRA per the settings; the new rows train too."""
    from moai_llm.training.lora import apply_lora

    return apply_lora(model, s.lora_rank, s.lora_alpha, s.lora_dropout, s.lora_target,
                      trainable_new_rows=growth.new_rows if growth else None)


def hold_frozen(model: Any, lora: dict[str, Any] | None) -> None:
    """Under a bf16 LoRA plan: the decoder layers' frozen weights in bf16 (half the bytes;
    autocast computes in bf16 anyway). Trainable tensors, embeddings, lm_head and the final
    norm stay fp32."""
    if not lora or lora.get("frozen_dtype") != "bf16":
        return
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in base.model.layers:
        for p in layer.parameters():
            if not p.requires_grad and p.dtype == torch.float32:
                p.data = p.data.to(torch.bfloat16)


def frozen_to_fp32(model: Any) -> None:
    """Frozen weights back to fp32 (before merging: the merged model is saved in fp32)."""
    import torch

    for p in model.parameters():
        if p.dtype != torch.float32 and p.is_floating_point():
            p.data = p.data.to(torch.float32)
