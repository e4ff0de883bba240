"""Runs of `moai` that get killed, for the fault-injection tests and benchmarks/bench_faults.py.

Every run is its own process, killed with a real SIGKILL. The processes are forked from a warm
server that imported torch, transformers and moai once (multiprocessing's forkserver), so a
launch costs well under a second instead of a fresh interpreter's 5-10 s; the server has no
threads of its own, so forking it is safe. A run is killed two ways:

- inside: `kill_at="checkpoint.before_rename#2"` sets MOAI_FAULT_KILL_AT, and the library's
  fault point SIGKILLs its own process at that moment (moai_llm/faults.py);
- outside: `kill_after=0.8` sends SIGKILL from this process after that many seconds, whatever
  the run is doing (a random moment, as an out-of-memory killer or a preemption picks one);
  `kill_when=lambda: ...` sends it as soon as a condition seen from outside holds (e.g. the
  third line of metrics.jsonl), somewhere in whatever the run does next.

    run = moai(["pretrain", ...], kill_at="final.between_renames")
    run.code      # -9 when killed, else the exit code
    run.output    # what it printed (stdout and stderr)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["moai_cli.app", "moai_llm.training.worker.loop", "moai_llm.training.launcher.runner", "moai_llm.modeling",
           "moai_llm.data", "moai_llm.tokenizer", "safetensors.torch", "torch.utils.tensorboard",
           "matplotlib.pyplot", "psutil"]
_context = None


def _ctx():
    global _context
    if _context is None:
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["fault_runs", *PRELOAD])
    return _context


def _child(args: list[str], env: dict[str, str], log: str, cwd: str) -> None:
    """In the forked process: the environment, output to `log`, then `moai ARGS`."""
    os.environ.update(env)
    for key in [k for k, v in env.items() if v == ""]:
        os.environ.pop(key)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    from moai_llm import faults

    torch.set_num_threads(1)
    faults.arm()  # the server imported it before this run's MOAI_FAULT_* were set
    from moai_cli.app import main

    sys.argv = ["moai", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class Finished:
    code: int
    output: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL


def start(args: list[str], *, kill_at: str | None = None, env: dict[str, str] | None = None,
          log: Path | None = None):
    """Start `moai ARGS` in a forked process; returns (process, log path)."""
    env = {"MOAI_FAULT_KILL_AT": kill_at or "", **(env or {})}
    if log is None:
        fd, name = tempfile.mkstemp(prefix="moai-run-", suffix=".log")
        os.close(fd)
        log = Path(name)
    proc = _ctx().Process(target=_child, args=([str(a) for a in args], env, str(log), os.getcwd()))
    proc.start()
    return proc, log


def moai(args: list[str], *, kill_at: str | None = None, kill_after: float | None = None,
         kill_when: Callable[[], bool] | None = None, env: dict[str, str] | None = None,
         timeout: float = 300) -> Finished:
    """Run `moai ARGS` to its end, or kill it (see the module docstring; `kill_when`: SIGKILL
    from outside as soon as it returns true, polled every 5 ms)."""
    t0 = time.perf_counter()
    proc, log = start(args, kill_at=kill_at, env=env)
    if kill_when is not None:
        while proc.is_alive() and not kill_when() and time.perf_counter() - t0 < timeout:
            time.sleep(0.005)
    proc.join(kill_after if kill_after is not None else 0 if kill_when is not None else timeout)
    if proc.is_alive():
        proc.kill()  # SIGKILL
        proc.join()
    output = log.read_text(errors="replace")
    log.unlink(missing_ok=True)
    return Finished(proc.exitcode, output, time.perf_counter() - t0)


# ---------------------------------------------------------------- where to kill, what to check

CHECKPOINT_POINTS = ("checkpoint.begin", "checkpoint.after_rng", "checkpoint.after_weights",
                     "checkpoint.after_optimizer", "checkpoint.after_scheduler", "checkpoint.before_state",
                     "checkpoint.before_rename", "checkpoint.after_rename")
FINAL_POINTS = ("final.begin", "final.after_weights", "final.after_rename")


def latest_step(out: Path) -> int:
    import json

    steps = [json.loads((p / "trainer_state.json").read_text())["step"]
             for p in (out / "checkpoints").glob("step-*") if (p / "trainer_state.json").is_file()]
    return max(steps, default=0)


def pick_kill(rng, out: Path, max_steps: int, save_steps: int, keep: int, where: str) -> str:
    """A fault point the next launch of the run in `out` is sure to reach, drawn with `rng`:
    `where` is "step", "checkpoint" (any gap of a checkpoint write, or removing an old one),
    "final" (the final save), "start" or "end" (all written, the lock still held)."""
    if where in ("start", "end"):
        return f"run.{where}"
    done = latest_step(out)
    saves = [s for s in range(done + 1, max_steps + 1) if s % save_steps == 0 or s == max_steps]
    if where in ("step", "checkpoint") and not saves:
        return "run.start"
    if where == "step":
        return f"step.end#{rng.randint(1, max_steps - done)}"
    if where == "checkpoint":
        on_disk = len(list((out / "checkpoints").glob("step-*"))) if (out / "checkpoints").is_dir() else 0
        points = list(CHECKPOINT_POINTS)
        if on_disk + len(saves) > keep:
            points.append("checkpoint.deleting_old")
        point = rng.choice(points)
        if point == "checkpoint.deleting_old":
            return f"{point}#1"
        return f"{point}#{rng.randint(1, len(saves))}"
    points = list(FINAL_POINTS) + (["final.between_renames"] if (out / "final_model").is_dir() else [])
    return rng.choice(points)


def problems(out: Path) -> list[str]:
    """What is wrong with a run folder at any moment: a step-N that is not a complete
    checkpoint of step N, or a final_model/ without weights or config."""
    import json

    found = []
    for ckpt in sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []:
        names = {p.name for p in ckpt.iterdir()}
        need = {"trainer_state.json", "model.safetensors", "config.json", "optimizer.pt", "scheduler.pt",
                "rng-rank0.pt"}
        if not need <= names:
            found.append(f"{ckpt.name} lacks {sorted(need - names)}")
        elif json.loads((ckpt / "trainer_state.json").read_text())["step"] != int(ckpt.name[5:]):
            found.append(f"{ckpt.name} records another step")
    final = out / "final_model"
    if final.exists() and not {"config.json", "model.safetensors", "training_state.json"} <= {
            p.name for p in final.iterdir()}:
        found.append("final_model/ is incomplete")
    return found


def leftovers(out: Path) -> list[str]:
    """Temporary files and folders of saves, and the lock file: none may outlive a finished run."""
    found = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".moai-output.json"]
    if (out / "checkpoints").is_dir():
        found += [f"checkpoints/{p.name}" for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    found += [p.name for p in out.parent.glob(f".{out.name}.*")]
    return sorted(found)


def weight_difference(a: Path, b: Path) -> tuple[bool, float]:
    """(every tensor equal, the largest absolute difference) of two model.safetensors files."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return False, float("inf")
    same = all(torch.equal(x[k], y[k]) for k in x)
    return same, max(float((x[k] - y[k]).abs().max()) for k in x)


def losses(out: Path) -> list[tuple[int, float]]:
    """(step, loss) of every metrics.jsonl line that has a loss, in file order."""
    import json

    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def wait_stopped(proc, timeout: float = 120) -> None:
    """Wait until `proc` stopped itself (MOAI_FAULT_STOP_AT) or ended."""
    import psutil

    deadline = time.time() + timeout
    while proc.is_alive() and time.time() < deadline:
        try:
            if psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError("the run neither stopped nor ended")
