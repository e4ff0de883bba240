"""Each input of a run resolved once, before anything is written (runner.prepare_run calls these).

    first(s, base)          the tokenizer (--tokenizer or the base model's own), its special ids,
                            the vocabulary growth of the base model, the --stages/--lora choices
    rest(found, given)      the prepared dataset's manifest, the sequence length, --eval-text, the
                            model config, the LoRA sizes (a --lora-target the model lacks is
                            refused here) and the learning-rate schedule in steps

`base` is the --pretrained-model folder, resolved and checked once by `inputs.pretrained_folder`
(a hub name is downloaded there). Every later step reads what an earlier one resolved: nothing
is looked up twice, and the workers read the result from run.yaml (training/resolved.py).

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.training.settings import resolve_settings
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(list(corpora.iter_texts("en"))[:50], d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text(json.dumps({"text": "hello"}) + "\\n")
    >>> s, sources = resolve_settings("pretrain", flags={"model": "tiny", "tokenizer": str(tok),
    ...     "dataset": [str(d / "docs.jsonl")], "max_steps": 10, "seq_len": 64, "warmup": 2})
    >>> found = rest(first(s, None), sources.given())
    >>> found.config.vocab_size, found.schedule.warmup_steps, found.schedule.decay_start
    (320, 2, 8)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.training import adaptation
from moai_llm.training.adaptation import Growth
from moai_llm.training.launcher import dpo, inputs
from moai_llm.training.schedule import Schedule, make_schedule
from moai_llm.training.settings import FIELDS, TrainSettings


@dataclass
class Found:
    """What the launcher resolved so far (`first`, then `rest`)."""

    settings: TrainSettings                # the run's settings with the values derived so far
    base: Any                              # moai_llm.pretrained.Pretrained, or None
    base_config: Any                       # its MoaiConfig, read once
    tokenizer_dir: Path
    tokenizer: Any
    special_ids: dict[str, int]
    growth: Growth | None
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {value, reason}
    manifest: dict | None = None           # a prepared --dataset's (raw sources: prepared in the run folder)
    model_config: dict | None = None       # a new model's config
    config: Any = None                     # the MoaiConfig the run trains
    lora: dict | None = None               # the LoRA sizes the planner needs
    schedule: Schedule | None = None


def with_derived(s: TrainSettings, derived: dict[str, dict[str, Any]]) -> TrainSettings:
    """New settings with the derived values in; the given ones are left as they are."""
    return dataclasses.replace(s, **{k: d["value"] for k, d in derived.items() if k in FIELDS})


def first(s: TrainSettings, base: Any) -> Found:
    """The tokenizer, its special ids, the growth of the base model's vocabulary and the choices
    that depend on it (--stages, --lora-*), checked."""
    from moai_llm.tokenizer import load_tokenizer

    derived: dict[str, dict[str, Any]] = {}
    base_config = inputs.pretrained_config(base)
    tok_dir = inputs.tokenizer_dir(s, derived, base)
    tokenizer = load_tokenizer(tok_dir, trust_remote_code=s.trust_remote_code)
    ids = inputs.check_special_tokens(tokenizer, tok_dir, base_config, s.pretrained_model)
    if s.mode in ("sft", "dpo") and base is None:
        raise MoaiInputError(f"`moai {s.mode}` needs --pretrained-model DIR (a model folder to fine-tune)")
    growth = adaptation.growth_for(s, len(tokenizer), base)
    if growth is not None and s.mode == "dpo":  # the reference scores the base's vocabulary
        raise MoaiInputError(f"--tokenizer {tok_dir}: {len(tokenizer):,} tokens, more than --pretrained-model "
                             f"{s.pretrained_model} knows", hint="run `moai sft` with the grown tokenizer first, then dpo")
    adaptation.decide(s, growth)  # --stages, --lora-*: refused before anything is written
    dpo.check(s, tok_dir)  # --loss, --beta, --reference of `moai dpo`: likewise
    if not s.dataset:
        raise MoaiInputError("no data: pass --dataset (a prepared folder, files, or a hub name)")
    return Found(s, base, base_config, tok_dir, tokenizer, ids, growth, derived)


def rest(found: Found, given: dict[str, Any]) -> Found:
    """The prepared dataset (read it holding its lock: runner.reading), the sequence length,
    --eval-text, the model config, the LoRA sizes and the schedule."""
    s, derived = found.settings, found.derived
    if inputs.is_prepared(s):
        found.manifest = inputs.check_prepared(s, found.tokenizer_dir, derived)
    inputs.sequence_length(s, "seq_len" in given, derived, found.base, found.manifest)
    inputs.check_eval_text(s, given, derived)
    s = with_derived(s, derived)
    found.model_config, found.config = inputs.model_config_for(
        s, found.tokenizer, found.special_ids, derived, found.base_config, found.growth)
    found.lora = adaptation.lora_facts(s, found.config, found.growth)
    found.schedule = schedule_of(s)
    found.settings = s
    return found


def schedule_of(s: TrainSettings) -> Schedule:
    """The learning-rate schedule in steps (an unknown --lr-scheduler, or phases longer than the
    run, refused here: before anything is written)."""
    return make_schedule(s.lr_scheduler, s.max_steps, **{k: v for k, v in s.group("schedule").items()
                                                          if k != "lr_scheduler"})
