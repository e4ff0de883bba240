"""Where the tasks of a prepare run: datatrove's Local, Slurm and Ray executors, one bar.

- local: `workers` processes on this machine (datatrove's LocalPipelineExecutor; one worker runs
  the tasks in this process). The workers start from a fork server that imported moai's steps
  once, and without re-running the caller's main module (a script that calls `prepare_dataset`
  needs no `if __name__ == "__main__":` guard).
- slurm: one job array (`sbatch`), one array task per prepare task, `workers` at once (default:
  no limit); the launching process waits for it and merges. The work folder, beside the
  output folder, must be on a filesystem every node sees.
- ray: the tasks on a Ray cluster (`ray_address`, default a local one), the `ray` extra.

Every executor skips the tasks whose completion marker (datatrove's `completions/NNNNN`) is
present, so a killed prepare resumes the unfinished tasks only. The launching process shows
one bar over all tasks, from the progress files the tasks write (input read, documents,
tokens per second, ETA). A task that stops on bad input writes the error beside its progress,
and the launching process shows it as one line.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from moai_llm.errors import MoaiInputError, MoaiRunError

EXECUTORS = ("local", "slurm", "ray")
_PRELOAD = ["moai_llm.data.pipeline", "moai_llm.data.encoding", "moai_llm.data.store", "moai_llm.atomic",
            "pyarrow", "tokenizers"]


@dataclass
class Executor:
    """How and where the tasks run (the CLI's --executor, --workers and Slurm/Ray options)."""

    kind: str = "local"
    workers: int | None = None  # tasks at once; local default 1, Slurm and Ray default: no limit
    partition: str | None = None  # Slurm partition (default: the cluster's default partition)
    time: str = "04:00:00"  # Slurm time limit per task
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str | None = None
    account: str | None = None
    sbatch_args: dict[str, str] = field(default_factory=dict)  # more #SBATCH lines, e.g. {"constraint": "cpu"}
    ray_address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001"); None: start one here

    def check(self) -> None:
        if self.kind not in EXECUTORS:
            raise MoaiInputError(f"--executor {self.kind}: unknown executor", hint=f"use one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise MoaiInputError(f"--workers {self.workers}: must be 1 or more")
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb < 1:
            raise MoaiInputError("--cpus-per-task and --mem-per-cpu must be 1 or more")
        if self.kind == "slurm" and not shutil.which("sbatch"):
            raise MoaiInputError("--executor slurm: sbatch is not on PATH (this is not a Slurm login node)",
                                 hint="run it where sbatch works, or use --executor local or ray")
        if self.kind == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise MoaiInputError("--executor ray: the ray package is not installed",
                                     hint="pip install ray (moai's ray extra), or use --executor local or slurm") from None

    def cores_per_task(self) -> int:
        import os

        if self.kind == "local":
            return max(1, (os.cpu_count() or 1) // (self.workers or 1))
        return self.cpus_per_task


def run_tasks(work: Path, tasks: int, executor: Executor, steps: list, total_bytes: int) -> None:
    """Run `steps` as `tasks` tasks with `executor`; raise the first task's error, or say which
    tasks did not finish."""
    from loguru import logger

    logs = str(work / "logs")
    shutil.rmtree(work / "failed", ignore_errors=True)
    logger.disable("datatrove")  # its lines would break the bar; task logs stay in WORK/logs/
    try:
        with watch_progress(work, tasks, total_bytes):
            try:
                {"local": _local, "slurm": _slurm, "ray": _ray}[executor.kind](steps, tasks, executor, logs, work)
            except Exception:
                raise_task_error(work)
                raise
    finally:
        logger.enable("datatrove")
    raise_task_error(work)
    left = incomplete(work, tasks)
    if left:
        raise MoaiRunError(f"{len(left)} of {tasks} prepare tasks did not finish (first: task {left[0]}; logs in "
                           f"{work / 'logs'})", hint="run the same command again: the finished tasks are kept")


def _local(steps, tasks: int, executor: Executor, logs: str, work: Path) -> None:
    from moai_llm.data.pipeline import LocalTasks

    workers = min(executor.workers or 1, tasks)
    local = LocalTasks(steps, tasks=tasks, workers=workers, logging_dir=logs)
    if workers > 1:
        import multiprocess

        multiprocess.get_context("forkserver").set_forkserver_preload(_PRELOAD)  # imported once, not per worker
        with _main_module_hidden():
            local.run()
        return
    for rank in local.get_incomplete_ranks():  # in this process, without run()'s manager process
        local._run_for_rank(rank)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without importing the caller's main module again.

    multiprocessing re-runs it in every new worker (by path, or by name under `python -m`), so
    a script that calls prepare_dataset without the `if __name__ == "__main__":` guard would
    start a prepare in each worker, endlessly. moai's steps need nothing from that module.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__.pop(name) for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _slurm(steps, tasks: int, executor: Executor, logs: str, work: Path) -> None:
    from moai_llm.data.pipeline import SlurmTasks

    extra = dict(executor.sbatch_args)
    if executor.account:
        extra["account"] = executor.account
    job = SlurmTasks(steps, tasks=tasks, time=executor.time, partition=executor.partition or "",
                     cpus_per_task=executor.cpus_per_task, mem_per_cpu_gb=executor.mem_per_cpu_gb,
                     workers=executor.workers or -1, job_name="moai-prepare", qos=executor.qos or "",
                     env_command=f'export PATH="{Path(sys.executable).parent}:$PATH"', sbatch_args=extra,
                     logging_dir=logs, slurm_logs_folder=str(work / "slurm_logs"))
    job.run()  # submits the array and returns
    if job.job_id in (None, -1):
        return
    try:
        _wait_for_job(str(job.job_id), work, tasks)
    except BaseException:
        if shutil.which("scancel"):
            subprocess.run(["scancel", str(job.job_id)], check=False, capture_output=True)
        raise


def _wait_for_job(job_id: str, work: Path, tasks: int) -> None:
    """Until every task is complete, a task failed, or the job left the queue."""
    gone = 0
    while incomplete(work, tasks):
        raise_task_error(work)
        time.sleep(2.0)
        if shutil.which("squeue"):
            queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
            gone = 0 if queued else gone + 1
            if gone >= 3:  # a few polls, so that a task finishing right now is seen complete
                return


def _ray(steps, tasks: int, executor: Executor, logs: str, work: Path) -> None:
    import ray
    from datatrove.executor import RayPipelineExecutor

    if not ray.is_initialized():
        ray.init(address=executor.ray_address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    RayPipelineExecutor(steps, tasks=tasks, workers=executor.workers or -1, logging_dir=logs,
                        cpus_per_task=executor.cpus_per_task, mem_per_cpu_gb=executor.mem_per_cpu_gb).run()


def incomplete(work: Path, tasks: int) -> list[int]:
    done = {p.name for p in (work / "logs" / "completions").glob("*")}
    return [rank for rank in range(tasks) if f"{rank:05d}" not in done]


def raise_task_error(work: Path) -> None:
    """Raise the first user-fixable error a task recorded (its message and hint), if any."""
    failed = sorted((work / "failed").glob("*.json"))
    if failed:
        record = json.loads(failed[0].read_text(encoding="utf-8"))
        raise MoaiInputError(record["message"], hint=record.get("hint"))


def totals(work: Path) -> tuple[int, int, int]:
    """Input bytes read, documents and tokens of all tasks so far (their progress files)."""
    read = docs = tokens = 0
    for path in (work / "progress").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            p = json.loads(path.read_text(encoding="utf-8"))
            read, docs, tokens = read + p["bytes"], docs + p["documents"], tokens + p["tokens"]
    return read, docs, tokens


@contextlib.contextmanager
def watch_progress(work: Path, tasks: int, total_bytes: int, every: float = 0.5) -> Iterator[None]:
    """One bar over all tasks while the block runs: bytes of input read (ETA), tasks done,
    documents, tokens per second."""
    from moai_llm.progress import progress_bar

    stop = threading.Event()
    _, _, tokens0 = totals(work)  # a resumed run's finished tasks do not count towards the rate
    started = time.monotonic()

    def poll(bar, bar_task) -> None:
        while True:
            read, docs, tokens = totals(work)
            rate = (tokens - tokens0) / max(time.monotonic() - started, 1e-9)
            done = tasks - len(incomplete(work, tasks))
            bar.update(bar_task, completed=read,
                       info=f"{done}/{tasks} tasks · {docs:,} docs · {rate:,.0f} tok/s")
            if stop.wait(every):
                return

    with progress_bar(unit="B", transient=True) as bar:
        bar_task = bar.add_task("preparing", total=total_bytes or None, info="")
        thread = threading.Thread(target=poll, args=(bar, bar_task), name="moai-prepare-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
