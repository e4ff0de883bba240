"""The one value that passes from the launcher to the workers: a run with every input resolved.

The launcher (moai_llm.training.launcher) resolves each input of a run once (the pretrained
folder, the tokenizer, the prepared dataset and its manifest, the vocabulary growth, the model
config, the plan, the learning-rate schedule, the checkpoint to resume from) and records them in
run.yaml (record.py); each worker reads them back as a `Resolved` and derives none of them
again. New parts of a run join here and in run.yaml, side by side: `moai dpo`'s objective and
its reference's stored log-probs (`Preference`) are one more field beside `schedule`, as a run
id that the nodes of one multi-node launch share would be.

    >>> from moai_llm.hardware.plan import Plan
    >>> from moai_llm.training.schedule import make_schedule
    >>> from moai_llm.training.settings import TrainSettings
    >>> run = Resolved(TrainSettings(output_dir="out/run"), Plan(seq_len=64),
    ...                make_schedule("wsd", 10, warmup=2, min_lr_ratio=0.0))
    >>> run.run_dir.name, run.base is None, run.growth is None, run.schedule.decay_start
    ('run', True, True, 8)
    >>> BaseModel.from_dict(BaseModel("base", "/models/base", None, None, 151936).to_dict()).vocab_rows
    151936
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moai_llm.hardware.plan import Plan
from moai_llm.training.adaptation import Growth
from moai_llm.training.schedule import Schedule
from moai_llm.training.settings import TrainSettings


@dataclass(frozen=True)
class BaseModel:
    """The --pretrained-model folder, resolved and checked by the launcher (a hub name is
    downloaded there): what the workers load and grow."""

    name: str                      # what the user passed (an adapter names its base by it)
    path: str                      # the local folder the weights are read from
    tokenizer_dir: str | None      # its own tokenizer folder (growth by pieces reads it), or None
    tokenizer_size: int | None     # tokens of that tokenizer
    vocab_rows: int                # embedding rows of the model

    @classmethod
    def of(cls, pretrained: Any) -> BaseModel:
        """From a moai_llm.pretrained.Pretrained."""
        return cls(pretrained.name, str(pretrained.path),
                   str(pretrained.tokenizer_dir) if pretrained.tokenizer_dir is not None else None,
                   pretrained.tokenizer_size, int(pretrained.vocab_rows))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseModel:
        return cls(**data)


@dataclass(frozen=True)
class Preference:
    """`moai dpo`'s objective and where its precomputed inputs are (launcher/dpo.py):
    the workers read the reference's log-probs from `reference_logprobs`, never the model."""

    loss: str                                # sigmoid | ipo | simpo | orpo
    beta: float
    simpo_gamma: float
    label_smoothing: float
    num_pairs: int
    reference: str | None = None             # the reference model folder (None: reference-free)
    reference_key: str | None = None         # alignment.reference.reference_key of it
    reference_logprobs: str | None = None    # prepared/reference/<key>.safetensors
    eval_pairs: str | None = None            # --eval-pairs, prepared (a folder in the run folder)
    eval_reference_logprobs: str | None = None

    def objective(self):
        from moai_llm.alignment.pair_losses import PreferenceObjective

        return PreferenceObjective(self.loss, self.beta, self.simpo_gamma, self.label_smoothing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preference:
        return cls(**data)


@dataclass(frozen=True)
class Resolved:
    """Everything a worker trains from; built by `RunRecord.resolved()` from run.yaml."""

    settings: TrainSettings            # every setting, the derived ones in (seq_len, tokenizer, prepared_dir)
    plan: Plan                         # the planner's decisions (after any first-step OOM retry)
    schedule: Schedule                 # the learning-rate schedule in steps
    model_config: dict | None = None   # a new model's config (None: the base model's own)
    base: BaseModel | None = None      # --pretrained-model, resolved
    growth: Growth | None = None       # how the base's vocabulary grows (None: it does not)
    resume_from: Path | None = None    # the checkpoint to continue from (None: a fresh start)
    preference: Preference | None = None  # `moai dpo`: the objective and the reference's log-probs

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.output_dir)
