"""Training settings: one dataclass holds every default; layers on top are kept apart.

A run's settings are, in order (later wins): the defaults of `TrainSettings`, what differs for
the mode (`presets/training/<mode>.yaml`, e.g. sft's lower learning rate), a `--config FILE`,
then flags. Each default is written once, here; the mode files hold only differences (a test
checks they restate nothing), and `moai pretrain --help` shows `mode_defaults(mode)`.

`resolve_settings` returns the merged settings and their `SettingsSources` (defaults, config
values, flags, each as given): run.yaml records them separately, and nothing the user typed is
changed afterwards. Values the run works out later (the sequence length of a prepared dataset,
the tokenizer of a model folder) are recorded as derived, beside them. The seed's config files
(a `training:` section with transformers names such as `per_device_train_batch_size`,
`lr_scheduler_type`, `warmup_ratio`) are read too.

    >>> s, sources = resolve_settings("pretrain", flags={"max_steps": 50})
    >>> s.max_steps, sources.source("max_steps"), sources.source("learning_rate")
    (50, 'flag', 'default')
    >>> mode_defaults("sft")["learning_rate"], mode_defaults("pretrain")["learning_rate"]
    (5e-05, 0.0003)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moai_llm.defaults import SEQ_LEN
from moai_llm.errors import MoaiInputError
from moai_llm.paths import preset_path
from moai_llm.training.settings_checks import validate

MODES = ("pretrain", "sft", "dpo")
# The rows each mode trains on (`moai data prepare --mode`): dpo trains on preference pairs.
DATA_MODE = {"pretrain": "pretrain", "sft": "sft", "dpo": "preference"}
# WSD with no decay length given decays over the last 20% of the run (MiniCPM; Hägele et al.
# 2024 found 10-20% enough); schedule.make_schedule applies it.
WSD_DECAY = 0.2


@dataclass
class TrainSettings:
    """Every setting of a run, grouped by the part that uses it (`GROUPS`): run, model, data,
    optimisation, schedule, checkpoints, distributed, adaptation."""

    # run: what the run is and where it writes
    mode: str = "pretrain"                 # pretrain | sft | dpo
    output_dir: str = "outputs/run"
    seed: int = 42
    logging_steps: int = 10
    tensorboard: bool = True
    trust_remote_code: bool = False
    # model: what is trained
    model: str = "small"                   # model preset of a new model (unless --model-config / --pretrained-model)
    model_config: str | None = None        # a config.json / yaml of a model
    pretrained_model: str | None = None    # start from this model directory
    vocab_multiple: int = 64               # new models: vocab_size = len(tokenizer) rounded up
    loss: dict = field(default_factory=lambda: {"type": "cross_entropy", "params": {}})
    # data: what it is trained on, and held-out evaluation
    tokenizer: str | None = None           # tokenizer folder (None: the pretrained model's own)
    dataset: list[str] = field(default_factory=list)   # prepared folder or raw sources
    dataset_config: str | None = None      # hub dataset config name (seed: --dataset_config)
    dataset_split: str = "train"
    prepared_dir: str | None = None        # derived: the prepared-dataset folder the run reads
    seq_len: int = SEQ_LEN                 # a prepared dataset's own length wins when not given
    thinking: str = "off"                  # sft rows of thinking chat templates: off | keep
    eval_steps: int = 0                    # 0: no evaluation (--eval-text alone derives one)
    eval_text: list[str] = field(default_factory=list)  # held-out text sources: eval_bpb
    eval_text_column: str | None = None    # their text column (None: detected)
    # optimisation: the optimizer step and the batch
    max_steps: int = 1000
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0             # clip the gradient norm to this; 0: no clipping
    max_bad_steps: int = 5                 # stop (exit 1) once this many steps had a NaN/inf loss or grad norm
    global_batch: int | None = None        # sequences per optimizer step; None: the plan's
    micro_batch_size: int | None = None    # --batch-size; None: the plan's
    gradient_accumulation_steps: int | None = None   # None: the plan's
    precision: str = "auto"                # auto (the plan: bf16 where supported) | bf16 | fp32
    gradient_checkpointing: bool | None = None       # None: the plan's
    compile: bool | None = None            # compile the decoder blocks; None: the plan's
    # schedule: the learning rate over the run (training/schedule.py)
    lr_scheduler: str = "wsd"              # wsd | cosine | linear | constant
    warmup: float = 0.02                   # steps (>= 1) or a fraction of the run (< 1)
    stable: float | None = None            # None: what warmup and decay leave (wsd)
    decay: float | None = None             # None: wsd decays over WSD_DECAY of the run; cosine/linear over the rest
    # Decay to zero: WSD's cooldown to 0 trains best (Hägele et al. 2024, MiniCPM); a 10% floor
    # is the cosine convention of older recipes. One value for every mode and schedule.
    min_lr_ratio: float = 0.0
    # checkpoints
    save_steps: int = 500
    save_total_limit: int = 3              # keep the last K checkpoints
    resume: str | None = None              # None | "auto" | "latest" | a checkpoint folder
    # distributed: processes, nodes, hardware
    nproc: int | None = None               # processes per node; None: the plan's
    strategy: str | None = None            # ddp | fsdp2 (several processes); None: the plan's
    hardware: str = "auto"                 # auto: probe this machine (--simulate for others)
    simulate: str | None = None            # "COUNTxNAME": plan for recorded hardware
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    # adaptation: starting from a base model (docs/base_models.md)
    new_embeddings: str = "pieces"         # rows of tokens the tokenizer added: pieces | mean
    stages: str | None = None              # e.g. "new-embeddings:200,all" (training/stages.py)
    lora_rank: int | None = None           # LoRA adapters of this rank (None: train every weight)
    lora_alpha: float | None = None        # None: 2 x rank
    lora_dropout: float = 0.0
    lora_target: str = "all-linear"        # all-linear, or Linear names: q_proj,v_proj,...
    lora_4bit: bool = False                # QLoRA: the frozen base in nf4 (bitsandbytes)
    # preference: `moai dpo` (moai_llm/alignment/pair_losses.py)
    preference_loss: str = "sigmoid"       # --loss: sigmoid (DPO) | ipo | simpo | orpo
    beta: float | None = None              # None: the loss's usual value (pair_losses.DEFAULT_BETA)
    simpo_gamma: float = 1.0               # SimPO's target reward margin
    label_smoothing: float = 0.0           # sigmoid only: conservative DPO's share of flipped labels
    reference: str | None = None           # the reference model folder (None: the starting model)
    eval_pairs: str | None = None          # held-out preference pairs scored every --eval-steps

    def group(self, name: str) -> dict[str, Any]:
        """The settings of one part of the run (a `GROUPS` name), e.g. `s.group("schedule")`."""
        return {k: getattr(self, k) for k in GROUPS[name]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def plan_choices(self) -> dict[str, Any]:
        """What these settings leave to the planner (None) or decide for it, as
        `make_plan(..., **choices)` keywords."""
        return {
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "nproc_per_node": self.nproc,
            "gradient_checkpointing": self.gradient_checkpointing,
            "precision": None if self.precision == "auto" else self.precision,
            "nnodes": self.nnodes if self.nnodes > 1 else None,
            "strategy": self.strategy,
            "compile": self.compile,
        }


FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
# The part of a run each setting belongs to: the sections of TrainSettings, in order.
GROUPS = {
    "run": ("mode", "output_dir", "seed", "logging_steps", "tensorboard", "trust_remote_code"),
    "model": ("model", "model_config", "pretrained_model", "vocab_multiple", "loss"),
    "data": ("tokenizer", "dataset", "dataset_config", "dataset_split", "prepared_dir", "seq_len", "thinking",
             "eval_steps", "eval_text", "eval_text_column"),
    "optimisation": ("max_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                     "max_grad_norm", "max_bad_steps", "global_batch", "micro_batch_size",
                     "gradient_accumulation_steps", "precision", "gradient_checkpointing", "compile"),
    "schedule": ("lr_scheduler", "warmup", "stable", "decay", "min_lr_ratio"),
    "checkpoints": ("save_steps", "save_total_limit", "resume"),
    "distributed": ("nproc", "strategy", "hardware", "simulate", "nnodes", "node_rank", "master_addr",
                    "master_port", "rdzv_endpoint"),
    "adaptation": ("new_embeddings", "stages", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
                   "lora_4bit"),
    "preference": ("preference_loss", "beta", "simpo_gamma", "label_smoothing", "reference", "eval_pairs"),
}


def mode_defaults(mode: str) -> dict[str, Any]:
    """Every setting's default for `mode`: the dataclass's, with presets/training/<mode>.yaml
    (what differs for the mode) on top."""
    return {**TrainSettings(mode=mode).to_dict(), **mode_differences(mode)}


def mode_differences(mode: str) -> dict[str, Any]:
    """presets/training/<mode>.yaml: only the settings whose default differs for `mode`."""
    path = preset_path("training", mode)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    data = data or {}
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise MoaiInputError(f"{path}: unknown setting(s) {sorted(unknown)}")
    return {name: _coerce(name, value, str(path)) for name, value in data.items()}


@dataclass
class SettingsSources:
    """Where each setting of a run came from, kept apart and never changed afterwards."""

    mode: str
    defaults: dict[str, Any]                  # mode_defaults(mode)
    config_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)   # values read from --config
    flags: dict[str, Any] = field(default_factory=dict)    # values given on the command line

    def given(self) -> dict[str, Any]:
        """What the user gave (flags win over the config file)."""
        return {**self.config, **self.flags}

    def source(self, name: str) -> str:
        if name in self.flags:
            return "flag"
        if name in self.config:
            return f"--config {self.config_file}"
        return "default"


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
    "num_train_epochs": None,  # moai counts steps; epochs are ignored
    "num_epochs": None,
}
# The seed's (transformers) schedule names for moai's four shapes (--lr-scheduler's values).
SEED_SCHEDULES = {"warmup_stable_decay": "wsd", "cosine_with_min_lr": "cosine", "constant_with_warmup": "constant"}
# Other keys of the seed's and transformers' config files that moai has no use for: read and
# ignored. Any other unknown key is a typo and refused with the closest valid name.
SEED_IGNORED = frozenset({
    "bf16", "fp16", "num_proc", "use_wandb", "wandb_project", "wandb_run_name", "wandb_entity",
    "report_to", "run_name", "logging_dir", "logging_first_step", "save_strategy",
    "evaluation_strategy", "eval_strategy", "per_device_eval_batch_size", "dataloader_num_workers",
    "dataloader_pin_memory", "overwrite_output_dir", "push_to_hub", "hub_model_id",
    "remove_unused_columns", "group_by_length", "ddp_find_unused_parameters", "optim",
    "streaming", "text_column", "preprocessing_num_workers", "torch_compile", "tf32",
})


def _flatten_config(data: dict[str, Any]) -> dict[str, Any]:
    """Accept flat moai files and the seed's sectioned file (model/data/training/loss)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("training", "data") and isinstance(value, dict):
            flat.update(_flatten_config(value))
        elif key == "model" and isinstance(value, dict):
            continue  # the seed's model section: use --model-config for architectures
        else:
            flat[key] = value
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in FIELDS and key not in SEED_NAMES and key not in SEED_IGNORED:
            raise MoaiInputError(f"unknown setting {key!r}{closest_name(key)}")
        name = key if key in FIELDS else SEED_NAMES.get(key)
        if name is None or key in SEED_IGNORED:
            continue  # settings moai has no use for (wandb, num_proc, epochs, ...)
        if key == "warmup_ratio" and "warmup_steps" in flat:
            continue  # the seed set both; its steps won
        out[name] = [value] if name in ("dataset", "eval_text") and isinstance(value, str) else value
    if flat.get("bf16") is True:
        out["precision"] = "bf16"
    return out


def closest_name(key: str) -> str:
    """", did you mean 'x'?" for the setting spelled most like `key` ("" when none is close).

    >>> closest_name("learning_rat")
    ", did you mean 'learning_rate'?"
    """
    import difflib

    names = sorted(set(FIELDS) | set(SEED_NAMES))
    match = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    return f", did you mean {match[0]!r}?" if match else ""


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
    try:
        return _flatten_config(data)
    except MoaiInputError as exc:
        raise MoaiInputError(f"--config {path}: {exc.args[0]}", hint="see `moai pretrain --help` for the "
                             "settings (file keys use underscores: learning_rate)") from None


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a value against the field's type so that a typo fails before any work starts."""
    if value is None:
        return None
    kind = _SCALARS.get(str(FIELDS[name].type).split("|")[0].strip())
    try:
        if kind is bool and isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        if kind is int and isinstance(value, float) and value != int(value):
            raise ValueError
        if kind in (int, float, bool):
            return kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf)
        raise MoaiInputError(f"{source}: {name} must be a number, got {value!r}") from None
    return value


def _layer(values: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise MoaiInputError(f"{source}: unknown setting {unknown[0]!r}{closest_name(unknown[0])}")
    return {k: _coerce(k, v, source) for k, v in values.items() if v is not None}


def resolve_settings(
    mode: str,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
) -> tuple[TrainSettings, SettingsSources]:
    """Merge the mode's defaults, then `config_file`, then `flags` (None = not given)."""
    if mode not in MODES:
        raise MoaiInputError(f"unknown mode {mode!r}", hint="use `moai pretrain`, `moai sft` or `moai dpo`")
    sources = SettingsSources(mode=mode, defaults=mode_defaults(mode))
    if config_file:
        sources.config_file = str(config_file)
        sources.config = _layer(load_config_file(config_file), f"--config {config_file}")
    sources.flags = _layer(flags or {}, "flag")
    settings = TrainSettings.from_dict({**sources.defaults, **sources.given(), "mode": mode})
    validate(settings)  # settings_checks.py
    return settings, sources
