"""The launcher: from flags to run.yaml, every input resolved once, then the workers started.

It runs in the `moai pretrain` / `moai sft` process and decides everything a run needs before
any training process starts; the workers (moai_llm.training.worker) read what it decided from
run.yaml and derive nothing again.

    inputs.py    checks of tokenizer, data, model and output folder, and the values derived
                 from them (the sequence length of a prepared dataset, the vocabulary size, ...)
    runner.py    prepare_run: resolve every input once (pretrained folder, tokenizer, manifest,
                 growth, model config, schedule, resume checkpoint, plan), under the run folder's
                 lock, into the run record (run.yaml); launch_run: start the workers on it
    resume.py    every resume decision: which checkpoint (--resume auto skips damaged ones), a
                 finished run left alone, --max-steps raised, the global batch kept
    guards.py    memory and disk checked against the plan before anything is allocated
    dpo.py       moai dpo's objective checked, its reference's log-probs computed once and stored
    launch.py    in this process for one process, torchrun for several; first-step OOM retry

`plan_for` is what `moai doctor` calls too, so doctor, `--dry-run` and the run show one plan.

    >>> from moai_llm.training.launcher import prepare_run, launch_run, plan_for
    >>> callable(prepare_run) and callable(launch_run) and callable(plan_for)
    True
"""

from moai_llm.training.launcher.launch import describe, format_description
from moai_llm.training.launcher.runner import (
    facts_for,
    holding,
    launch_description,
    launch_run,
    plan_for,
    prepare_run,
    prepared_input,
    reading,
)

__all__ = ["describe", "facts_for", "format_description", "holding", "launch_description",
           "launch_run", "plan_for", "prepare_run", "prepared_input", "reading"]
