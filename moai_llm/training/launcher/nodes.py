"""The nodes of one multi-node run share its folder: the lock belongs to the run, not a process.

A run launched with `--nnodes N` (N > 1) has a run key, the same on every node of one launch
and different for any other launch:

- the run id: `SLURM_JOB_ID` when Slurm runs it (every node of a job sees the same), otherwise
  the rendezvous endpoint (`--rdzv-endpoint`, or `--master-addr:--master-port`);
- every setting but `--node-rank` (the same command on every node: another learning rate, batch
  or folder is another launch).

Node rank 0 takes the folder's lock (moai_llm.locks.RunLock) with that key, as a one-node run
takes it, and is the only node that writes before training: the prepared data, run.yaml (then
it publishes in the lock file that run.yaml is written, with its digest). Any other node rank
joins instead of locking: it waits for a live lock holding the same key and a published
run.yaml, reads the run from it, and writes nothing itself. While training, global rank 0 alone
writes run-wide files (checkpoints' shared files, final_model/, metrics); each rank writes only
its own `rng-rank{R}.pt`.

- a live owner with another key (another launch into the folder) is refused as a one-node run
  is: `... is in use by moai pretrain (pid ... on ..., since ...); lock file ...`, exit 2;
- a dead run's lock is taken over by node 0 (as before); the other nodes wait for node 0's
  new lock, never for a dead one's;
- a node that finds no live lock of its run for `JOIN_TIMEOUT_S` stops with exit 1; while node 0
  lives (preparing raw files, planning) it waits as long as node 0 takes.

    >>> from moai_llm.training.settings import TrainSettings
    >>> a = TrainSettings(output_dir="run", nnodes=2, node_rank=0, master_addr="10.0.0.1", master_port=29500)
    >>> b = TrainSettings(output_dir="run", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500)
    >>> c = TrainSettings(output_dir="run", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501)
    >>> run_key(a) == run_key(b), run_key(a) == run_key(c), run_key(TrainSettings()) is None
    (True, False, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from moai_llm.training.settings import TrainSettings

JOIN_TIMEOUT_S = 600.0  # as long as torchrun's static rendezvous waits for the other nodes


def run_id(s: TrainSettings) -> str:
    """What names one launch of a multi-node run (see the module docstring)."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    if s.rdzv_endpoint:
        return f"rdzv-{s.rdzv_endpoint}"
    return f"{s.master_addr or '127.0.0.1'}:{s.master_port or 29500}"


def run_key(s: TrainSettings) -> str | None:
    """The key the nodes of one launch share, or None for a one-node run."""
    if s.nnodes <= 1:
        return None
    settings = {k: v for k, v in dataclasses.asdict(s).items() if k != "node_rank"}
    blob = json.dumps({"run": run_id(s), "settings": settings}, sort_keys=True, default=str)
    return f"{run_id(s)} {hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def is_member(s: TrainSettings) -> bool:
    """A node that joins node 0's lock instead of taking one."""
    return s.nnodes > 1 and s.node_rank > 0


def digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Member:
    """The hold of a node rank > 0 on its run's folder: joined, not taken (see the module docstring).
    `acquire()` waits for node 0's published lock; `owner` is then its content."""

    def __init__(self, folder: str | Path, command: str, key: str, poll_s: float = 0.2,
                 timeout_s: float = JOIN_TIMEOUT_S, settings: TrainSettings | None = None):
        from moai_llm.locks import lock_path

        self.folder = Path(folder).expanduser().absolute()
        self.path = lock_path(self.folder)
        self.command, self.key, self.poll_s, self.timeout_s = command, key, poll_s, timeout_s
        self.owner: dict[str, Any] | None = None
        self.settings = settings
        self.held = False

    def acquire(self) -> None:
        from moai_llm.errors import FolderInUseError, MoaiRunError
        from moai_llm.locks import describe, owner_alive
        from moai_llm.progress import info

        deadline, said = time.monotonic() + self.timeout_s, False
        while time.monotonic() < deadline:
            try:
                owner, mtime = json.loads(self.path.read_bytes()), self.path.stat().st_mtime
            except (OSError, ValueError):
                owner = None
            if owner is not None and owner_alive(owner, mtime):
                if owner.get("key") != self.key:
                    raise FolderInUseError(
                        f"{self.folder} is in use by {describe(owner)}; lock file {self.path}", owner,
                        hint="wait for it to finish, or choose another output folder (the nodes of one "
                             "run give the same settings and rendezvous, node rank aside)")
                if owner.get("run_yaml") and self._published(owner):
                    self.owner, self.held = owner, True
                    return
                deadline = time.monotonic() + self.timeout_s  # node 0 lives: preparing data, planning
            elif self._finished():  # node 0 found the run complete and is gone already
                self.owner, self.held = {"complete": True}, True
                return
            if not said:
                info(f"waiting for node 0 of this run to take {self.folder} and write its run.yaml")
                said = True
            time.sleep(self.poll_s)
        raise MoaiRunError(f"node 0 of this run did not start in {self.folder} within "
                           f"{self.timeout_s:.0f} s (no live lock of this run in {self.path})")

    def _finished(self) -> bool:
        from moai_llm.training.launcher.resume import NEWEST
        from moai_llm.training.record import RUN_YAML
        from moai_llm.training.worker.checkpoint import final_model_state

        s = self.settings
        if s is None or s.resume not in NEWEST or not (self.folder / RUN_YAML).is_file():
            return False
        return (final_model_state(self.folder) or {}).get("step") == s.max_steps

    def _published(self, owner: dict[str, Any]) -> bool:
        from moai_llm.training.record import RUN_YAML

        return owner.get("complete") or digest(self.folder / RUN_YAML) == owner["run_yaml"]

    def release(self) -> None:
        self.held = False  # nothing to remove: the lock file is node 0's


def publish(lock: Any, out: Path, complete: bool = False) -> None:
    """Node 0: say in its lock that run.yaml is written (its digest), for the other nodes."""
    from moai_llm.locks import RunLock
    from moai_llm.training.record import RUN_YAML

    if isinstance(lock, RunLock) and lock.key is not None:
        lock.publish(run_yaml=digest(out / RUN_YAML) or "none", complete=complete)


def joined_record(member: Member, s: TrainSettings) -> Any:
    """Node rank > 0: the run as node 0 recorded it, with this node's rank; written nowhere."""
    from moai_llm.training.record import RUN_YAML, read_record
    from moai_llm.training.worker.checkpoint import final_model_state

    record = read_record(Path(s.output_dir) / RUN_YAML)
    record = dataclasses.replace(record, flags={**record.flags, "node_rank": s.node_rank})
    if member.owner and member.owner.get("complete"):
        final = final_model_state(s.output_dir) or {}
        record.complete = {"step": final.get("step"), "loss": final.get("loss"),
                           "final_model": str(Path(s.output_dir) / "final_model"), "complete": True}
    return record
