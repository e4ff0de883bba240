"""Named fault points: the places where a test kills a run on purpose, to prove it survives.

`fault_point("checkpoint.before_rename")` marks a moment of a run (inside a checkpoint write,
the final save, after a step). It does nothing unless one of three environment variables was
set when the process started (or when `arm()` was called since), so a normal run pays one
global lookup per point (~0.1 µs):

- `MOAI_FAULT_KILL_AT=NAME#K`: the process SIGKILLs itself the K-th time it reaches the point
  NAME (`NAME` alone: the first time); `MOAI_FAULT_KILL_AT=N`: at the N-th point reached, of
  any name. SIGKILL is what an out-of-memory killer, a preempted node or `kill -9` does: no
  handler, no `finally`, no flush runs.
- `MOAI_FAULT_STOP_AT=NAME#K` (or `N`): the process stops itself there with SIGSTOP instead,
  alive and holding what it holds (the run folder's lock) until it gets SIGCONT: how a test
  makes a second launch meet a first one at a known moment.
- `MOAI_FAULT_LOG=FILE`: every point reached is appended to FILE, one name per line, so a test
  can list the moments a run passes through and pick some to kill at.
- `MOAI_FAULT_NAN_AT=N[,M...]`: the loss of optimizer steps N, M (counted from 1, as messages
  count them) is made NaN before the backward pass, as an overflow would make it: how a test
  shows that a bad step is skipped, counted and, past `--max-bad-steps`, stops the run.

The points (`POINTS`) cover a step, every gap between the files of a checkpoint, its rename,
the removal of old checkpoints, and the publication of final_model/. Counting is per process:
a run that is killed and resumed starts counting again (`arm()` starts it again too).

    >>> import os
    >>> fault_point("step.end")            # unset: nothing happens
    >>> parse_kill_at("checkpoint.before_rename#2"), parse_kill_at("7"), parse_kill_at("")
    (('checkpoint.before_rename', 2), (None, 7), None)
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "MOAI_FAULT_KILL_AT"
STOP_ENV = "MOAI_FAULT_STOP_AT"
LOG_ENV = "MOAI_FAULT_LOG"
NAN_ENV = "MOAI_FAULT_NAN_AT"

# Every point the library marks, in the order a run meets them (tests pick from these).
POINTS = (
    "run.start",                      # lock held, run.yaml written, before any training
    "step.end",                       # after an optimizer step, before its bookkeeping
    "checkpoint.begin",               # the temporary folder exists, empty
    "checkpoint.after_rng",           # this process's RNG file written
    "checkpoint.after_weights",       # config.json, model.safetensors, tokenizer written
    "checkpoint.after_optimizer",     # optimizer.pt written
    "checkpoint.after_scheduler",     # scheduler.pt written
    "checkpoint.before_state",        # everything but trainer_state.json (the completion mark)
    "checkpoint.before_rename",       # complete and flushed, still under its temporary name
    "checkpoint.after_rename",        # published as step-N; older ones not yet removed
    "checkpoint.deleting_old",        # an old checkpoint renamed aside, partly deleted
    "final.after_adapter",            # LoRA runs: final_adapter/ published, final_model/ not yet
    "final.begin",                    # final_model's temporary folder exists, empty
    "final.after_weights",            # the model folder is written under its temporary name
    "final.between_renames",          # the previous final_model set aside, the new one not in place
    "final.after_rename",             # final_model/ published; the previous one not yet removed
    "run.end",                        # everything written, lock still held
    "export.tensor_written",          # moai export: one more tensor in the GGUF's temporary file
)

_counts: dict[str, int] = {}
_armed: tuple[str | None, str | None, str | None] | None = None
_nan_steps: frozenset[int] = frozenset()


def arm() -> bool:
    """Read MOAI_FAULT_KILL_AT / STOP_AT / LOG / NAN_AT again (a process that set them after
    importing this module, e.g. a child forked from a warm server); returns whether any is set."""
    global _armed, _nan_steps
    found = tuple(os.environ.get(k) or None for k in (KILL_ENV, STOP_ENV, LOG_ENV))
    _armed = found if any(found) else None
    _nan_steps = frozenset(int(x) for x in (os.environ.get(NAN_ENV) or "").split(",") if x.strip().isdigit())
    _counts.clear()
    return _armed is not None or bool(_nan_steps)


def nan_at(step: int) -> bool:
    """Whether MOAI_FAULT_NAN_AT asks for a NaN loss at optimizer step `step` (from 1)."""
    return step in _nan_steps


def parse_kill_at(spec: str) -> tuple[str | None, int] | None:
    """`NAME#K` -> (NAME, K); `NAME` -> (NAME, 1); `N` -> (None, N); empty -> None."""
    spec = spec.strip()
    if not spec:
        return None
    if spec.isdigit():
        return None, int(spec)
    name, _, count = spec.partition("#")
    return name, int(count) if count else 1


def fault_point(name: str) -> None:
    """Mark the moment `name` (see the module docstring); kills (or stops) this process when
    asked."""
    if _armed is not None:
        _reached(name, *_armed)


def _reached(name: str, kill_at: str | None, stop_at: str | None, log: str | None) -> None:
    _counts[name] = _counts.get(name, 0) + 1
    _counts[""] = _counts.get("", 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    for spec, sig in ((kill_at, signal.SIGKILL), (stop_at, signal.SIGSTOP)):
        target = parse_kill_at(spec or "")
        if target is not None and target[0] in (None, name) and _counts[target[0] or ""] == target[1]:
            os.kill(os.getpid(), sig)


arm()
