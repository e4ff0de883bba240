"""`moai dpo`'s objective and reference, resolved by the launcher before any worker starts.

    check(s)                     the objective's flags (--loss, --beta, --label-smoothing, a
                                 --reference given to a reference-free loss): refused before
                                 anything is written
    resolve(s, found, plan, out) the run.yaml `preference` section: the reference folder (--reference,
                                 else the starting model: with LoRA the base, whose adapter-off
                                 output it is), its key, and its log-probs over every pair,
                                 computed here once with the reference loaded alone (freed before
                                 training starts) and stored with the prepared data as
                                 prepared/reference/<key>.safetensors, reused on resume; --eval-pairs
                                 prepared into the run folder with the reference's log-probs too

The workers read the stored log-probs (training/worker/dpo_step.py); the reference's weights
are never in memory beside the policy's.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import TrainSettings

EVAL_PAIRS = "eval_pairs"  # the run folder's prepared --eval-pairs


def check(s: TrainSettings, tokenizer_dir: Path | None = None) -> Any:
    """The PreferenceObjective of a dpo run's settings (None for other modes); a --reference
    whose tokenizer differs from the policy's (`tokenizer_dir`) is refused here too."""
    if s.mode != "dpo":
        return None
    from moai_llm.alignment.pair_losses import PreferenceObjective

    objective = PreferenceObjective(s.preference_loss, s.beta, s.simpo_gamma, s.label_smoothing)
    if s.reference and not objective.needs_reference:
        raise MoaiInputError(f"--reference {s.reference}: --loss {s.preference_loss} is reference-free "
                             "(it compares the policy's own log-probs)",
                             hint="drop --reference, or use --loss sigmoid or ipo")
    if s.eval_pairs and not Path(s.eval_pairs).expanduser().is_file():
        raise MoaiInputError(f"--eval-pairs {s.eval_pairs}: no such file",
                             hint="pass a .jsonl/.json/.csv/.parquet file of preference pairs")
    if s.reference and tokenizer_dir is not None:
        _reference_dir(s.reference, tokenizer_dir)
    return objective


def reference_folder(s: TrainSettings, found: Any) -> Path:
    """The reference model folder: --reference (a model or run folder), else the base model."""
    if not s.reference:
        return Path(found.base.path)
    return _reference_dir(s.reference, found.tokenizer_dir)


def _reference_dir(reference: str, tokenizer_dir: Path) -> Path:
    """The --reference model folder (a run folder's final_model/ too), its tokenizer checked."""
    from moai_llm.alignment.reference import check_reference_tokenizer
    from moai_llm.inference.loading import resolve_model_dir

    folder, kind = resolve_model_dir(reference)
    if "adapter" in kind:
        raise MoaiInputError(f"--reference {reference}: a LoRA adapter folder, not a model",
                             hint="pass the merged model folder (final_model/) as the reference")
    check_reference_tokenizer(folder, tokenizer_dir)
    return folder


def resolve(s: TrainSettings, found: Any, plan: Any, out: Path, plan_only: bool = False) -> dict | None:
    """The run.yaml `preference` section (None for other modes); the reference's log-probs
    computed and stored unless they are already (or `plan_only`)."""
    objective = check(s)
    if objective is None:
        return None
    manifest = found.manifest or {}
    if "preference" not in manifest:
        raise MoaiInputError(f"--dataset {s.dataset[0]}: not preference pairs",
                             hint="prepare it with `moai data prepare --mode preference`")
    section: dict[str, Any] = {"loss": objective.loss, "beta": objective.b, "simpo_gamma": objective.simpo_gamma,
                               "label_smoothing": objective.label_smoothing,
                               "num_pairs": int(manifest["preference"]["num_pairs"])}
    if s.eval_pairs and plan.strategy == "fsdp2":  # its scorer runs the decoder outside the sharded root
        raise MoaiInputError(f"--eval-pairs {s.eval_pairs}: not scored under FSDP2 during training",
                             hint="use --strategy ddp, or score the pairs afterwards with `moai eval MODEL --pairs FILE`")
    eval_dir = _eval_pairs(s, found, out) if s.eval_pairs and not plan_only else None
    section["eval_pairs"] = str(eval_dir) if eval_dir else None
    if objective.needs_reference:
        folder = reference_folder(s, found)
        key = _key(folder, s)
        section.update(reference=str(folder), reference_key=key)
        if not plan_only:
            paths = _reference_logprobs(s, found, plan, folder, key, [s.prepared_dir, eval_dir])
            section.update(reference_logprobs=paths[0], eval_reference_logprobs=paths[1])
    return section


def _key(folder: Path, s: TrainSettings) -> str:
    """The reference's key; a 4-bit base (QLoRA, the reference being the base) scores otherwise."""
    from moai_llm.alignment.reference import reference_key

    key = reference_key(folder)
    return f"{key}-nf4" if s.lora_4bit and not s.reference else key


def _eval_pairs(s: TrainSettings, found: Any, out: Path) -> Path:
    from moai_llm.eval.pair_accuracy import prepare_pairs

    return prepare_pairs(s.eval_pairs, found.tokenizer_dir, s.seq_len, out / EVAL_PAIRS)


def _reference_logprobs(s: TrainSettings, found: Any, plan: Any, folder: Path, key: str,
                        prepared: list) -> list[str | None]:
    """Stored log-probs of the reference over each prepared folder (None stays None), with
    the reference loaded once, here, only when one of them is not stored yet."""
    from moai_llm.alignment.reference import (
        load_reference_logprobs,
        reference_logprobs,
        stored_path,
    )
    from moai_llm.data.store import read_manifest

    def stored(p) -> bool:
        return load_reference_logprobs(p, key, read_manifest(p)["preference"]["num_pairs"]) is not None

    todo = [p for p in prepared if p is not None and not stored(p)]
    if todo:
        import torch

        from moai_llm.progress import info

        info(f"reference log-probs: scoring {len(todo)} prepared set(s) with {folder} (once; stored by key {key[:12]})")
        model = load_reference(s, found, plan, folder)
        bf16 = plan.precision == "bf16" and plan.device.startswith("cuda")
        try:
            for p in todo:
                reference_logprobs(model, p, key, batch_rows=max(1, plan.micro_batch_size),
                                   chunk_size=int(plan.loss_chunk_size), source=str(folder),
                                   autocast_dtype=torch.bfloat16 if bf16 else None)
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return [str(stored_path(p, key)) if p is not None else None for p in prepared]


def load_reference(s: TrainSettings, found: Any, plan: Any, folder: Path) -> Any:
    """The reference model as the worker builds the policy's base (the plan's attention and
    loss chunk; the base in 4 bits under --lora-4bit), on the plan's device."""
    import dataclasses

    import torch

    from moai_llm.training.resolved import BaseModel
    from moai_llm.training.worker.model_setup import build_model

    base = BaseModel(str(folder), str(folder), None, None, int(found.config.vocab_size))
    four_bit = s.lora_4bit and not s.reference
    settings = dataclasses.replace(s, lora_4bit=four_bit)
    model = build_model(settings, None, found.tokenizer, plan, base, None)
    device = torch.device("cuda", 0) if plan.device.startswith("cuda") else torch.device("cpu")
    return model if four_bit else model.to(device)
