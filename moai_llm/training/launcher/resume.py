"""Resuming a run: which checkpoint, whether there is anything left to do, what changed.

Decided once, in the launching process, while it holds the run folder's lock:

- `--resume` / `--resume auto` / `--resume DIR` name a checkpoint (`resolve_resume`);
  the one chosen is recorded in run.yaml and the workers read it there.
- A run that is already complete (final_model/ is from step --max-steps, no checkpoint is
  beyond it) asked to resume from its newest checkpoint is not trained again: `finished_run` returns its record marked complete, and
  nothing in the folder changes (what killed saves left beside it is removed).
- `--max-steps` above what the checkpoint's run was planned for continues from the checkpoint
  to the new end, and says so. The learning-rate schedule is a function of --max-steps, so the
  steps already trained followed the old schedule: the result equals a run planned for the new
  --max-steps from the start only where both schedules agree on those steps (a constant
  schedule, or a warmup given in steps and a WSD decay that had not begun). A checkpoint beyond
  --max-steps is refused (its weights are past the end asked for).
- Starting fresh (no --resume) in a folder that holds checkpoints is refused: the new run's
  checkpoints would mix with the old ones, and the newest (the old run's) would win a later
  resume. So is a fresh launch into a finished run (final_model/), and into any folder that is
  not moai's run folder (`check_output_folder`, moai_llm.ownership).
- `--resume auto` takes the newest checkpoint that checkpoint_check finds whole, saying which
  newer ones it skipped and why.

    >>> import tempfile
    >>> from moai_llm.training.settings import resolve_settings
    >>> s, _ = resolve_settings("pretrain", flags={"output_dir": tempfile.mkdtemp(), "resume": "auto"})
    >>> finished_run(s) is None, resolve(s) is None          # nothing there yet: start fresh
    (True, True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import TrainSettings
from moai_llm.training.worker.checkpoint import (
    FINAL_MODEL,
    STATE_FILE,
    checkpoints_dir,
    final_model_state,
    latest_checkpoint,
    remove_stale_temps,
)
from moai_llm.training.worker.checkpoint_check import checkpoint_problem, newest_sound

# The --resume values that mean "the newest checkpoint of this run" (a bare --resume is "latest";
# "true" is the seed's spelling); anything else names a checkpoint or run folder.
NEWEST = ("auto", "latest", "true", "True")


def checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """trainer_state.json of a complete checkpoint."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))


def check_output_folder(s: TrainSettings, inputs: list[str]) -> None:
    """The run folder is absent, empty or moai's own run folder (moai_llm.ownership: a user's
    folder, `/`, home, the current folder or one holding this run's `inputs` is refused), and a
    fresh launch never restarts a finished run: its final_model/ and metrics stay."""
    from moai_llm.ownership import claim, kind_of

    out = Path(s.output_dir)
    own = kind_of(out) == "run"
    claim(out, "run", "--output-dir", [] if own else inputs)  # its own data/ is an input of a resume
    if own and not s.resume and (out / FINAL_MODEL).exists():
        final = final_model_state(out) or {}
        raise MoaiInputError(
            f"--output-dir {out}: holds a finished run (final_model/ from step {final.get('step', '?')}); "
            "a fresh launch would replace it",
            hint="pass --resume auto to continue it (with a higher --max-steps), or name a new --output-dir")


def finished_run(s: TrainSettings) -> Any:
    """The record of the run in `s.output_dir`, marked complete, when --resume was asked for and
    the run already trained all `s.max_steps` steps and wrote final_model/; otherwise None.
    Call it holding the folder's lock."""
    if s.resume not in NEWEST:
        return None  # fresh, or a checkpoint named on purpose: train from it
    final = final_model_state(s.output_dir)
    latest = latest_checkpoint(s.output_dir)
    if final is None or final.get("step") != s.max_steps:
        return None
    if latest is not None and checkpoint_problem(latest) is None and checkpoint_state(latest)["step"] > s.max_steps:
        return None  # resolve() refuses it, with the reason
    from moai_llm.training.record import RUN_YAML, RunRecord, read_record

    out = Path(s.output_dir)
    remove_stale_temps(out)  # what a save killed after publishing left beside it
    if not (out / "loss.png").exists():
        from moai_llm.training.worker.metrics import plot_loss

        plot_loss(out)
    record = read_record(out) if (out / RUN_YAML).is_file() else RunRecord(mode=s.mode)
    record.complete = {"step": final["step"], "loss": final.get("loss"),
                       "final_model": str(out / "final_model"), "complete": True}
    return record


def resolve(s: TrainSettings) -> Path | None:
    """The checkpoint to start from (None: fresh), after the checks in the module docstring."""
    checkpoint = resolve_resume(s.resume, s.output_dir)
    if checkpoint is None:
        existing = latest_checkpoint(s.output_dir)
        if existing is not None and not s.resume:
            raise MoaiInputError(
                f"--output-dir {s.output_dir} holds checkpoints of an earlier run (newest "
                f"{existing.name}); a fresh run would mix its checkpoints with them",
                hint="pass --resume auto to continue that run, or another --output-dir (or delete "
                     f"{Path(s.output_dir) / 'checkpoints'} to start over)")
        return None
    state = checkpoint_state(checkpoint)
    step, planned = int(state["step"]), int(state.get("max_steps") or 0)
    if step > s.max_steps:
        raise MoaiInputError(
            f"--max-steps {s.max_steps}: the run is already at step {step} ({checkpoint})",
            hint=f"pass --max-steps {step} or more to continue it, or start a fresh run in another "
                 "--output-dir")
    if planned and planned != s.max_steps and step < s.max_steps:
        from moai_llm.progress import info

        info(f"--max-steps {s.max_steps}: continuing from {checkpoint} (step {step}, of a run planned "
             f"for {planned} steps) to step {s.max_steps}; the learning-rate schedule is now the one "
             f"for {s.max_steps} steps (steps 1-{step} followed the {planned}-step schedule)")
    return checkpoint


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`None` → start fresh; "auto" → newest checkpoint if any; "latest" → newest, which must
    exist; otherwise a checkpoint folder (or a run folder holding checkpoints)."""
    if not resume:
        return None
    if resume in NEWEST:
        found = newest_sound(output_dir)  # a damaged newest one is skipped, with its reason
        if found is None and latest_checkpoint(output_dir) is not None:
            newest = latest_checkpoint(output_dir)
            raise MoaiInputError(f"--resume {resume}: no checkpoint in {checkpoints_dir(output_dir)} can be "
                                 f"resumed from (newest {newest.name}: {checkpoint_problem(newest)})",
                                 hint="restore the checkpoints from a copy, or start fresh in another --output-dir")
        if found is None and resume != "auto":
            raise MoaiInputError(
                f"--resume: no checkpoint in {checkpoints_dir(output_dir)}",
                hint="run without --resume to start fresh, or use --resume auto",
            )
        return found
    path = Path(resume)
    found = path if (path / STATE_FILE).is_file() else latest_checkpoint(path)
    if found is None:
        raise MoaiInputError(
            f"--resume {resume}: not a checkpoint (no {STATE_FILE}) and no checkpoints/step-N in it",
            hint="pass a checkpoints/step-N folder, a run folder, or --resume auto",
        )
    problem = checkpoint_problem(found)
    if problem is not None:
        raise MoaiInputError(f"--resume {resume}: {found} cannot be resumed from ({problem})",
                             hint="name an earlier checkpoint, or pass --resume auto to take the newest sound one")
    return found


def check_global_batch(checkpoint: Path | None, global_batch: int) -> None:
    """A resume must keep the global batch: the data position is counted in samples, and each
    step covers one global batch of them."""
    if checkpoint is None:
        return
    saved = int(checkpoint_state(checkpoint).get("global_batch") or 0)
    if saved and saved != global_batch:
        raise MoaiInputError(
            f"--resume {checkpoint}: it was trained with global batch {saved}, this run's plan has "
            f"{global_batch}; the data position would not match",
            hint=f"resume with --global-batch {saved} (any number of processes and micro batch "
                 "that make it)")
