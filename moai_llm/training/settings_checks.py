"""Settings that cannot work, refused with one line naming the flag (resolve_settings calls
`validate` on every run's settings before anything else happens).

Float settings are finite and in their range (`FLOAT_RANGES`); counts, choices and
combinations are checked in `validate`. It reads a TrainSettings (moai_llm.training.settings)
without importing it, so the two modules do not import each other.
"""

from __future__ import annotations

from typing import Any

from moai_llm.errors import MoaiInputError

# Float settings: flag -> (lowest, highest, which ends are allowed: "[]", "(]", "[)", "()").
# NaN and inf are refused for every one (a NaN learning rate trains a NaN model without a word).
# Settings without a flag are named as the config file spells them.
FLOAT_RANGES = {
    "learning_rate": ("--learning-rate", 0.0, None, "(]"),
    "min_lr_ratio": ("--min-lr-ratio", 0.0, 1.0, "[]"),
    "warmup": ("--warmup-steps", 0.0, None, "[]"),
    "stable": ("--stable-steps", 0.0, None, "[]"),
    "decay": ("--decay-steps", 0.0, None, "[]"),
    "weight_decay": ("--weight-decay", 0.0, None, "[]"),
    "adam_beta1": ("adam_beta1", 0.0, 1.0, "[)"),
    "adam_beta2": ("adam_beta2", 0.0, 1.0, "[)"),
    "adam_epsilon": ("adam_epsilon", 0.0, 1.0, "(]"),
    "max_grad_norm": ("--max-grad-norm", 0.0, None, "[]"),
    "lora_alpha": ("--lora-alpha", 0.0, None, "(]"),
    "lora_dropout": ("--lora-dropout", 0.0, 1.0, "[)"),
}


def check_floats(s: Any) -> None:
    """Every float setting finite and in its range, or a MoaiInputError naming the flag.

    >>> from moai_llm.training.settings import TrainSettings
    >>> check_floats(TrainSettings(max_grad_norm=-1.0))
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: --max-grad-norm must be at least 0 (0: no clipping), got -1.0
    """
    import math

    for name, (flag, low, high, ends) in FLOAT_RANGES.items():
        value = getattr(s, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MoaiInputError(f"{flag} must be a finite number, got {value}")
        low_ok = value > low or (value == low and ends[0] == "[")
        high_ok = high is None or value < high or (value == high and ends[1] == "]")
        if not (low_ok and high_ok):
            bound = f"at least {low:g}" if ends[0] == "[" else f"above {low:g}"
            if high is not None:
                bound += f" and at most {high:g}" if ends[1] == "]" else f" and below {high:g}"
            off = " (0: no clipping)" if name == "max_grad_norm" else ""
            raise MoaiInputError(f"{flag} must be {bound}{off}, got {value}")


def validate(s: Any) -> None:
    """Reject settings that cannot work, naming the flag."""
    check_floats(s)
    checks = [
        (s.logging_steps >= 1, "--logging-steps must be at least 1"),
        (s.save_steps >= 0, "--save-steps must be at least 0 (0: no checkpoints before the end)"),
        (s.eval_steps >= 0, "--eval-steps must be at least 0 (0: no evaluation)"),
        (s.max_bad_steps >= 1, "--max-bad-steps must be at least 1"),
        (s.vocab_multiple >= 1, "vocab_multiple must be at least 1"),
        (s.nnodes >= 1 and 0 <= s.node_rank < s.nnodes, "--node-rank must be in [0, --nnodes)"),
        (s.master_port is None or 1 <= s.master_port <= 65535, "--master-port must be in 1..65535"),
        (s.max_steps >= 1, "--max-steps must be at least 1"),
        (s.seq_len >= 8, "--seq-len must be at least 8"),
        (s.micro_batch_size is None or s.micro_batch_size >= 1, "--batch-size must be at least 1"),
        (s.gradient_accumulation_steps is None or s.gradient_accumulation_steps >= 1,
         "--gradient-accumulation-steps must be at least 1"),
        (s.global_batch is None or s.global_batch >= 1, "--global-batch must be at least 1"),
        (s.save_total_limit >= 1, "--save-total-limit must be at least 1"),
        (s.precision in ("auto", "bf16", "fp32"), "--precision must be auto, bf16 or fp32"),
        (s.nproc is None or s.nproc >= 1, "--nproc must be at least 1"),
        (s.strategy in (None, "ddp", "fsdp2"), "--strategy must be ddp or fsdp2"),
        (s.hardware == "auto", "--hardware: only `auto` (probe this machine); use --simulate "
                               "COUNTxNAME to plan for other hardware"),
        (s.new_embeddings in ("pieces", "mean"), "--new-embeddings must be pieces or mean"),
        (s.thinking in ("off", "keep"), "--thinking must be off or keep"),
        (s.lora_rank is None or s.lora_rank >= 1, "--lora-rank must be at least 1"),
        (s.lora_rank is not None or not s.lora_4bit, "--lora-4bit needs --lora-rank R"),
    ]
    for ok, message in checks:
        if not ok:
            raise MoaiInputError(message)
    if not isinstance(s.loss, dict) or "type" not in s.loss:
        raise MoaiInputError("loss: expected a block like {type: cross_entropy, params: {}}")
