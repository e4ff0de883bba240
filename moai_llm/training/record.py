"""run.yaml: everything a run was given, defaulted, derived and decided, each kept apart.

    moai_run: 2
    mode: pretrain
    given:        what you typed: flags, and the values of a --config file (never changed)
    defaults:     the default of every other setting
    derived:      what the run worked out from its inputs, with why (seq_len from the prepared
                  dataset, the tokenizer of a model folder, vocab_size from the tokenizer, ...)
    plan:         what the planner decided, with a reason per decision (hardware/planner.py)
    plan_retries: earlier plans replaced after an out-of-memory error at the first step
    schedule:     the learning-rate schedule resolved in steps (warmup, stable, decay, decay_start)
    resume:       the checkpoint this run started from (null for a fresh start)
    base_model:   the --pretrained-model folder as resolved (its local path, its tokenizer), or null
    preference:   moai dpo: the loss, beta, the reference and its stored log-probs, or null
    model, model_config, tokenizer, data: what was built from and trained on

Every setting appears in exactly one of given/defaults/derived, so each value (seq_len
included) is stored once; `settings()` merges them back. Training processes read what the
launcher resolved from here and nowhere else (`resolved()`: settings, plan, schedule, model
config, base model, vocabulary growth, resume checkpoint); a retry rewrites the plan
(atomically) before they are relaunched. Every launch writes run.yaml anew, so a run begun by
an earlier moai resumes with a record of this one.

    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> record = RunRecord(mode="pretrain", flags={"max_steps": 5},
    ...                    defaults={"learning_rate": 3e-4},
    ...                    derived={"seq_len": {"value": 64, "reason": "rows of the dataset"}},
    ...                    planned={"micro_batch_size": 2, "seq_len": 64})
    >>> path = record.write(out)
    >>> again = read_record(path)
    >>> again.settings().max_steps, again.settings().seq_len, again.plan().micro_batch_size
    (5, 64, 2)
    >>> "seq_len" in path.read_text().split("plan:")[1]   # stored once, in derived
    False
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moai_llm.atomic import write_text_atomic
from moai_llm.errors import MoaiInputError
from moai_llm.hardware.plan import Plan
from moai_llm.training.resolved import BaseModel, Preference, Resolved
from moai_llm.training.settings import FIELDS, SettingsSources, TrainSettings

RUN_YAML = "run.yaml"
FORMAT = 2


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    mode: str
    flags: dict[str, Any] = field(default_factory=dict)        # given on the command line
    config_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)       # given in the --config file
    defaults: dict[str, Any] = field(default_factory=dict)     # settings nobody gave
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {value, reason}
    planned: dict[str, Any] = field(default_factory=dict)      # Plan.to_dict(), without seq_len
    plan_retries: list[dict[str, Any]] = field(default_factory=list)
    resume: dict[str, Any] | None = None   # {"requested", "checkpoint", "step"}
    schedule: dict[str, Any] | None = None  # Schedule.to_dict()
    base_model: dict[str, Any] | None = None  # BaseModel.to_dict()
    preference: dict[str, Any] | None = None  # Preference.to_dict() (moai dpo)
    model: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] | None = None
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    created: str = field(default_factory=_now)
    # Not written to run.yaml: what this launch found (set by runner.prepare_run).
    complete: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    found_in_folder: frozenset[str] | None = field(default=None, compare=False, repr=False)  # None: unknown
    made_folder: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def from_sources(cls, sources: SettingsSources, derived: dict[str, dict[str, Any]],
                     plan: Plan, **sections: Any) -> RunRecord:
        """The record of a prepared run: sources as given, defaults of everything else."""
        taken = set(sources.given()) | set(derived) | {"mode"}
        defaults = {k: v for k, v in sources.defaults.items() if k not in taken}
        return cls(mode=sources.mode, flags=dict(sources.flags), config_file=sources.config_file,
                   config=dict(sources.config), defaults=defaults, derived=derived,
                   planned=plan.to_dict(), **sections)

    def settings(self) -> TrainSettings:
        """The run's settings: defaults, then the config file, then flags, then derived values."""
        derived = {k: d["value"] for k, d in self.derived.items() if k in FIELDS}
        return TrainSettings.from_dict({**self.defaults, **self.config, **self.flags, **derived,
                                        "mode": self.mode})

    def plan(self) -> Plan:
        return Plan.from_dict({**self.planned, "seq_len": self.settings().seq_len})

    @property
    def resume_checkpoint(self) -> Path | None:
        return Path(self.resume["checkpoint"]) if self.resume else None

    def resolved(self) -> Resolved:
        """What the launcher resolved, as the workers take it (nothing is derived again)."""
        from moai_llm.training.adaptation import Growth
        from moai_llm.training.schedule import Schedule

        if self.schedule is None:
            raise MoaiInputError("run.yaml has no schedule section (written by an earlier moai)",
                                 hint="launch the run again with `moai pretrain`/`moai sft` (add --resume auto "
                                      "to continue it): the launch writes a complete run.yaml")
        growth = (self.derived.get("embedding_growth") or {}).get("value")
        return Resolved(self.settings(), self.plan(), Schedule.from_dict(self.schedule),
                        model_config=self.model_config,
                        base=BaseModel.from_dict(self.base_model) if self.base_model else None,
                        growth=Growth(**growth) if growth else None, resume_from=self.resume_checkpoint,
                        preference=Preference.from_dict(self.preference) if self.preference else None)

    def to_yaml(self) -> str:
        data = {
            "moai_run": FORMAT, "mode": self.mode, "created": self.created,
            "command": [str(a) for a in self.command],
            "given": {"flags": self.flags, "config_file": self.config_file, "config": self.config},
            "defaults": self.defaults, "derived": self.derived,
            "plan": {k: v for k, v in self.planned.items() if k != "seq_len"},
            "plan_retries": self.plan_retries, "schedule": self.schedule, "resume": self.resume,
            "base_model": self.base_model, "preference": self.preference, "model": self.model,
            "model_config": self.model_config, "tokenizer": self.tokenizer, "data": self.data,
        }
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def write(self, out: str | Path) -> Path:
        """Write `out/run.yaml` atomically (a reader sees the old file or the new, never half)."""
        return write_text_atomic(Path(out) / RUN_YAML, self.to_yaml())


def read_record(path: str | Path) -> RunRecord:
    """A run.yaml (or the run folder holding one) as a RunRecord."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_YAML
    if not path.is_file():
        raise MoaiInputError(f"{path}: no such run.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if data.get("moai_run") != FORMAT:
        raise MoaiInputError(f"{path}: written by another version of moai (format "
                             f"{data.get('moai_run')}, this one reads {FORMAT})",
                             hint="start the run again, or resume it with the version that began it")
    given = data.get("given") or {}
    return RunRecord(
        mode=data["mode"], flags=given.get("flags") or {}, config_file=given.get("config_file"),
        config=given.get("config") or {}, defaults=data.get("defaults") or {},
        derived=data.get("derived") or {}, planned=data.get("plan") or {},
        plan_retries=data.get("plan_retries") or [], resume=data.get("resume"),
        schedule=data.get("schedule"), base_model=data.get("base_model"), preference=data.get("preference"),
        model=data.get("model") or {}, model_config=data.get("model_config"),
        tokenizer=data.get("tokenizer") or {}, data=data.get("data") or {},
        command=data.get("command") or [], created=data.get("created", ""),
    )


def record_retry(path: str | Path, plan: Plan, reason: str) -> RunRecord:
    """Replace the plan of the run.yaml at `path` by `plan` (after a first-step OOM), keeping
    the replaced one's batch shape and the reason in `plan_retries`."""
    record = read_record(path)
    record.plan_retries.append({
        "micro_batch_size": record.planned.get("micro_batch_size"),
        "gradient_accumulation_steps": record.planned.get("gradient_accumulation_steps"),
        "reason": reason,
    })
    record.planned = plan.to_dict()
    path = Path(path)
    record.write(path if path.is_dir() else path.parent)
    return record
