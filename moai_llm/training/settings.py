"""Training settings: one dataclass, resolved from preset ← --config FILE ← flags (flags win).

Every field of `TrainSettings` ends up in `run.yaml`, together with `reasons` (where each
non-default value came from), so that a run can be inspected, resumed and reproduced. The
seed's config files (a `training:` section with transformers names such as
`per_device_train_batch_size`, `lr_scheduler_type`, `warmup_ratio`) are read too.

    >>> s, reasons = resolve_settings("pretrain", flags={"max_steps": 50})
    >>> s.max_steps, reasons["max_steps"]
    (50, 'flag')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moai_llm.errors import MoaiInputError
from moai_llm.paths import preset_path


@dataclass
class TrainSettings:
    mode: str = "pretrain"                 # pretrain | sft
    # what to train
    model: str | None = None               # model preset name (tiny, small, 0.5b, ...)
    model_config: str | None = None        # a config.json / yaml of a model
    pretrained_model: str | None = None    # start from this model directory
    tokenizer: str | None = None           # tokenizer folder
    dataset: list[str] = field(default_factory=list)   # prepared folder or raw sources
    dataset_config: str | None = None      # hub dataset config name (seed: --dataset_config)
    dataset_split: str = "train"
    prepared_dir: str | None = None        # resolved prepared-dataset folder
    output_dir: str = "outputs/run"
    # optimisation
    max_steps: int = 1000
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.0
    lr_scheduler: str = "wsd"
    warmup: float = 0.02
    stable: float | None = None
    decay: float | None = 0.2
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seq_len: int = 2048
    global_batch: int | None = None        # sequences per optimizer step
    micro_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    precision: str = "auto"                # auto | bf16 | fp32
    gradient_checkpointing: bool | None = None
    # bookkeeping
    save_steps: int = 500
    save_total_limit: int = 3
    eval_steps: int = 0
    logging_steps: int = 10
    seed: int = 42
    resume: str | None = None              # None | "auto" | "latest" | a checkpoint folder
    max_consecutive_nan: int = 5
    vocab_multiple: int = 64
    loss: dict = field(default_factory=lambda: {"type": "cross_entropy", "params": {}})
    tensorboard: bool = True
    # launch
    nproc: int | None = None
    strategy: str | None = None            # ddp | fsdp2 (several processes); None = the plan's
    hardware: str = "auto"                 # auto | a hardware preset name
    simulate: str | None = None            # "COUNTxNAME"
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The seed's (transformers) names for the same settings.
SEED_NAMES = {
    "per_device_train_batch_size": "micro_batch_size",
    "batch_size": "micro_batch_size",
    "lr_scheduler_type": "lr_scheduler",
    "warmup_steps": "warmup",
    "warmup_ratio": "warmup",
    "stable_ratio": "stable",
    "decay_ratio": "decay",
    "max_seq_length": "seq_len",
    "tokenizer_path": "tokenizer",
    "dataset_name": "dataset",
    "save_total_limit": "save_total_limit",
    "num_train_epochs": None,  # moai counts steps; epochs are ignored with a reason
    "num_epochs": None,
}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}


def _flatten_config(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept flat moai files and the seed's sectioned file (model/data/training/loss)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("training", "data") and isinstance(value, dict):
            flat.update(_flatten_config(value, source))
        elif key == "model" and isinstance(value, dict):
            continue  # the seed's model section: use --model-config for architectures
        else:
            flat[key] = value
    out: dict[str, Any] = {}
    for key, value in flat.items():
        name = SEED_NAMES.get(key, key) if key not in _FIELDS else key
        if name is None or name not in _FIELDS:
            continue  # settings moai has no use for (wandb, num_proc, ...) are ignored
        if key == "warmup_ratio" and "warmup_steps" in flat:
            continue  # the seed set both; its steps won
        if name == "dataset" and isinstance(value, str):
            value = [value]
        if key in ("bf16", "fp16"):
            continue
        out[name] = value
    if flat.get("bf16") is True:
        out["precision"] = "bf16"
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a --config YAML/JSON file into settings names, or raise MoaiInputError."""
    path = Path(path)
    if not path.is_file():
        raise MoaiInputError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MoaiInputError(f"--config {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise MoaiInputError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return _flatten_config(data, str(path))


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a value against the field's type so that a typo fails before any work starts."""
    if value is None:
        return None
    default = _FIELDS[name].default
    try:
        if name in ("warmup", "stable", "decay", "learning_rate", "min_lr_ratio", "weight_decay",
                    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"):
            return float(value)
        if isinstance(default, bool) or name == "gradient_checkpointing":
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int) or name in ("global_batch", "micro_batch_size",
                                                  "gradient_accumulation_steps", "nproc", "master_port"):
            if isinstance(value, float) and value != int(value):
                raise ValueError
            return int(value)
    except (TypeError, ValueError):
        raise MoaiInputError(f"{source}: {name} must be a number, got {value!r}") from None
    return value


def resolve_settings(
    mode: str,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
) -> tuple[TrainSettings, dict[str, str]]:
    """Merge presets/training/<mode>.yaml, then `config_file`, then `flags` (None = unset)."""
    merged: dict[str, Any] = {"mode": mode}
    reasons: dict[str, str] = {}
    preset = preset_path("training", mode)
    layers = [(f"preset {preset.name}", load_config_file(preset) if preset.is_file() else {})]
    if config_file:
        layers.append((f"--config {config_file}", load_config_file(config_file)))
    layers.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
    for source, layer in layers:
        for name, value in layer.items():
            if name not in _FIELDS:
                raise MoaiInputError(f"{source}: unknown setting {name!r}")
            merged[name] = _coerce(name, value, source)
            reasons[name] = source
    settings = TrainSettings.from_dict(merged)
    validate(settings)
    return settings, reasons


def validate(s: TrainSettings) -> None:
    """Reject settings that cannot work, naming the flag."""
    if s.mode not in ("pretrain", "sft"):
        raise MoaiInputError(f"unknown mode {s.mode!r}", hint="use `moai pretrain` or `moai sft`")
    checks = [
        (s.max_steps >= 1, "--max-steps must be at least 1"),
        (s.learning_rate > 0, "--learning-rate must be positive"),
        (s.seq_len >= 8, "--seq-len must be at least 8"),
        (s.micro_batch_size is None or s.micro_batch_size >= 1, "--batch-size must be at least 1"),
        (s.gradient_accumulation_steps is None or s.gradient_accumulation_steps >= 1,
         "--gradient-accumulation-steps must be at least 1"),
        (s.global_batch is None or s.global_batch >= 1, "--global-batch must be at least 1"),
        (s.save_total_limit >= 1, "--save-total-limit must be at least 1"),
        (s.precision in ("auto", "bf16", "fp32"), "--precision must be auto, bf16 or fp32"),
        (s.nproc is None or s.nproc >= 1, "--nproc must be at least 1"),
        (s.strategy in (None, "ddp", "fsdp2", "single"), "--strategy must be ddp or fsdp2"),
        (s.hardware in (None, "auto"), "--preset: only `auto` (probe this machine); use --simulate "
                                       "COUNTxNAME to plan for other hardware"),
    ]
    for ok, message in checks:
        if not ok:
            raise MoaiInputError(message)
    if not isinstance(s.loss, dict) or "type" not in s.loss:
        raise MoaiInputError("loss: expected a block like {type: cross_entropy, params: {}}")
