"""Run a plan: in this process for one process, `torchrun` for several, on one node or many.

    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.hardware.planner import make_plan
    >>> from moai_llm.hardware.simulate import simulate
    >>> from moai_llm.training.launcher.launch import describe, launch
    >>> tiny = MoaiConfig.from_preset("tiny")
    >>> plan = make_plan(simulate("1xA100-80GB"), tiny, seq_len=128)
    >>> describe(plan, ["--run-yaml", "out/run.yaml"])["command_line"]   # doctest: +ELLIPSIS
    '...python... -m moai_llm.training.worker --run-yaml out/run.yaml'
    >>> plan8 = make_plan(simulate("8xA100-80GB"), tiny, seq_len=128)
    >>> describe(plan8, ["--run-yaml", "out/run.yaml"])["command_line"]  # doctest: +ELLIPSIS
    '...torchrun --nproc_per_node 8 --nnodes 1 ... -m moai_llm.training.worker --run-yaml out/run.yaml'
    >>> def train_fn(plan):                  # stands in for the trainer: gets the plan, env set
    ...     return 0
    >>> launch(plan, ["--run-yaml", "out/run.yaml"], in_process=train_fn)  # 0 on success
    0

- One process: the plan's environment is applied to `os.environ` and `in_process(plan)` is
  called (no second interpreter, no port, debuggable). Without `in_process` the worker module
  runs as one child process.
- Several processes: `torchrun --nproc_per_node N ... -m moai_llm.training.worker <args>`
  with a free port on a single node, or the multi-node rendezvous flags given in
  `rendezvous` (nnodes, node_rank, master_addr, master_port, or rdzv_endpoint/rdzv_id).
- The environment is `os.environ` plus the plan's env; a variable the user already set wins
  (they may know better, e.g. NCCL_P2P_DISABLE=0) and `describe` says it was kept.
- Workers read the plan from run.yaml, nowhere else (worker/__main__.py).
- First-step OOM: the trainer raises `FirstStepOOM`; a torchrun worker calls
  `exit_first_step_oom()` which leaves a marker file and exits with 75 (worker/exits.py:
  torchrun itself exits 1 whatever its children did, hence the marker). `launch` then halves the micro
  batch, doubles accumulation (global batch unchanged), says so, hands the new plan to
  `on_retry` (the runner rewrites run.yaml with it, so the workers read it) and retries, at
  most `max_retries` times.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moai_llm.hardware.plan import Plan
from moai_llm.training.worker.exits import (
    EXIT_CODE_ENV,
    EXIT_FIRST_STEP_OOM,
    OOM_MARKER_ENV,
    FirstStepOOM,
    parent_death_signal,
)

WORKER_MODULE = "moai_llm.training.worker"
DEFAULT_MAX_RETRIES = 3


def free_port() -> int:
    """A TCP port free on this machine right now (for a single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    """The torchrun of this interpreter's environment (not whatever is first on PATH)."""
    beside = Path(sys.executable).parent / "torchrun"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _rendezvous_flags(plan: Plan, rendezvous: dict[str, Any] | None) -> list[str]:
    rdzv = {k.replace("-", "_"): v for k, v in (rendezvous or {}).items() if v not in (None, "")}
    nnodes = int(rdzv.get("nnodes", plan.nnodes) or 1)
    if rdzv.get("rdzv_endpoint"):
        return [
            "--nnodes", str(rdzv.get("nnodes", nnodes)),
            "--rdzv_backend", str(rdzv.get("rdzv_backend", "c10d")),
            "--rdzv_endpoint", str(rdzv["rdzv_endpoint"]),
            "--rdzv_id", str(rdzv.get("rdzv_id", "moai")),
        ]
    if nnodes > 1 or "master_addr" in rdzv:
        return [
            "--nnodes", str(nnodes),
            "--node_rank", str(rdzv.get("node_rank", 0)),
            "--master_addr", str(rdzv.get("master_addr", "127.0.0.1")),
            "--master_port", str(rdzv.get("master_port", 29500)),
        ]
    port = rdzv.get("master_port") or free_port()
    return ["--nnodes", "1", "--master_addr", "127.0.0.1", "--master_port", str(port)]


def build_env(plan: Plan, base: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(environment for the workers, plan variables kept from the user's environment)."""
    env = dict(os.environ if base is None else base)
    kept: dict[str, str] = {}
    for key, value in plan.env.items():
        if key in env and env[key] != str(value):
            kept[key] = env[key]
        else:
            env[key] = str(value)
    return env, kept


def _is_single(plan: Plan, rendezvous: dict[str, Any] | None) -> bool:
    nnodes = int((rendezvous or {}).get("nnodes") or plan.nnodes or 1)
    return plan.nproc_per_node * nnodes == 1


def describe(
    plan: Plan,
    worker_args: Sequence[str],
    rendezvous: dict[str, Any] | None = None,
    in_process: bool = True,
    module: str = WORKER_MODULE,
) -> dict[str, Any]:
    """The exact command and environment `launch` would use (what `--dry-run` prints).

    Returns {"mode": "in-process" | "subprocess" | "torchrun", "command": [...],
    "command_line": str, "env": {set variables}, "kept_from_environment": {...}, "plan": {...}}.
    """
    _, kept = build_env(plan, base=dict(os.environ))
    env = {k: str(v) for k, v in plan.env.items() if k not in kept}
    worker = ["-m", module, *map(str, worker_args)]
    if _is_single(plan, rendezvous):
        mode = "in-process" if in_process else "subprocess"
        command = [sys.executable, *worker]
    else:
        mode = "torchrun"
        command = [
            *_torchrun(), "--nproc_per_node", str(plan.nproc_per_node),
            *_rendezvous_flags(plan, rendezvous), "--max_restarts", "0", *worker,
        ]
    return {
        "mode": mode,
        "command": command,
        "command_line": shlex.join(command),
        "env": env,
        "kept_from_environment": kept,
        "plan": plan.to_dict(),
    }


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable --dry-run text: env lines, then the command, then each reason."""
    lines = [f"# mode: {desc['mode']}"]
    for key, value in sorted(desc["env"].items()):
        lines.append(f"export {key}={shlex.quote(value)}")
    for key, value in sorted(desc["kept_from_environment"].items()):
        lines.append(f"# {key}={value} kept from your environment (plan wanted {key} otherwise)")
    if desc["mode"] == "in-process":
        lines.append(f"# runs inside this process; equivalent to: {desc['command_line']}")
    else:
        lines.append(desc["command_line"])
    for key, reason in desc["plan"].get("reasons", {}).items():
        lines.append(f"# {key}: {reason}")
    for warning in desc["plan"].get("warnings", []):
        lines.append(f"# warning: {warning}")
    return "\n".join(lines)


def _say(message: str) -> None:
    from moai_llm.progress import warn

    warn(message)


def _release_cuda_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_once(
    plan: Plan,
    worker_args: Sequence[str],
    rendezvous: dict[str, Any] | None,
    in_process: Callable[[Plan], Any] | None,
    module: str,
) -> tuple[int, bool]:
    """Run the plan once; returns (exit code, whether it failed with a first-step OOM)."""
    if _is_single(plan, rendezvous) and in_process is not None:
        env, _ = build_env(plan)
        saved = {k: os.environ.get(k) for k in env if os.environ.get(k) != env[k]}
        os.environ.update(env)
        oom, result = False, None
        try:
            result = in_process(plan)
        except FirstStepOOM:
            oom = True
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if oom:
            # Outside the handler: the exception's traceback, whose frames hold the failed
            # attempt's model, optimizer and activations, is gone, so they can be freed.
            _release_cuda_memory()
            return EXIT_FIRST_STEP_OOM, True
        return (int(result) if isinstance(result, int) else 0), False

    desc = describe(plan, worker_args, rendezvous, in_process=False, module=module)
    env, _ = build_env(plan)
    with tempfile.TemporaryDirectory(prefix="moai-launch-") as tmp:
        marker, exit_file = Path(tmp) / "first_step_oom", Path(tmp) / "exit_code"
        env[OOM_MARKER_ENV], env[EXIT_CODE_ENV] = str(marker), str(exit_file)
        rc = subprocess.call(desc["command"], env=env, preexec_fn=parent_death_signal())
        oom = rc == EXIT_FIRST_STEP_OOM or marker.exists()
        if rc != 0 and not oom and exit_file.exists():
            rc = int(exit_file.read_text().strip() or rc)  # torchrun says 1 whatever its workers did
    nnodes = int((rendezvous or {}).get("nnodes") or plan.nnodes or 1)
    if rc != 0 and not oom and nnodes > 1:
        _say(f"this node (rank {(rendezvous or {}).get('node_rank', 0)} of {nnodes}) stopped with exit code "
             f"{rc}: a process of the run failed, or another node was lost (its log says which); "
             f"relaunch every node with the same command and --resume auto")
    return rc, oom


def launch(
    plan: Plan,
    worker_args: Sequence[str],
    rendezvous: dict[str, Any] | None = None,
    dry_run: bool = False,
    in_process: Callable[[Plan], Any] | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    module: str = WORKER_MODULE,
    on_retry: Callable[[Plan, str], None] | None = None,
) -> int:
    """Run `plan`; return the exit code (0 ok, 75 when OOM persisted after the retries).

    `dry_run` prints `format_description(describe(...))` to stdout and returns 0.
    `on_retry(plan, reason)` is called with the smaller plan before each relaunch (the runner
    writes it into run.yaml, where the workers read it). Several nodes do not retry on their
    own (the other nodes would not follow): they stop with 75 and name the micro batch to
    rerun with.
    """
    if dry_run:
        desc = describe(
            plan, worker_args, rendezvous, in_process=in_process is not None, module=module
        )
        sys.stdout.write(format_description(desc) + "\n")
        sys.stdout.flush()
        return 0
    retries = 0
    while True:
        rc, oom = _run_once(plan, worker_args, rendezvous, in_process, module)
        if not oom:
            return rc
        smaller = _smaller_plan(plan, rendezvous, retries, max_retries)
        if smaller is None:
            return EXIT_FIRST_STEP_OOM
        reason = (f"out of memory at the first step with micro batch {plan.micro_batch_size}: "
                  f"retrying with micro batch {smaller.micro_batch_size} x accumulation "
                  f"{smaller.gradient_accumulation_steps} (global batch stays "
                  f"{smaller.global_batch})")
        _say(reason)
        if on_retry is not None:
            on_retry(smaller, reason)
        plan, retries = smaller, retries + 1


def _smaller_plan(plan: Plan, rendezvous: dict[str, Any] | None, retries: int,
                  max_retries: int) -> Plan | None:
    """The plan to retry with after a first-step OOM, or None (said why) when there is none."""
    nnodes = int((rendezvous or {}).get("nnodes") or plan.nnodes or 1)
    if nnodes > 1 and plan.micro_batch_size > 1:
        _say(f"out of memory at the first step with micro batch {plan.micro_batch_size} on a "
             f"{nnodes}-node run; rerun every node with micro batch "
             f"{plan.halved().micro_batch_size} (nodes cannot retry alone)")
        return None
    if retries >= max_retries or plan.micro_batch_size <= 1:
        _say(f"out of memory at the first step with micro batch {plan.micro_batch_size}; "
             f"giving up after {retries} retries (try a shorter --seq-len or a smaller model)")
        return None
    return plan.halved()
