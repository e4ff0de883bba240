#!/usr/bin/env python3
"""A stand-in for Slurm's sbatch, srun, scontrol, squeue and scancel that runs job arrays here.

The tests link these names to this file in a folder put first on PATH; which command it is
comes from the name it is called by. State (job scripts, pids, next job id) lives in
$MOAI_SLURM_STAND_IN. What it does, as Slurm would:

- `sbatch [--export=ALL,K=V] SCRIPT`: reads the `#SBATCH` lines (array range and its `%N`
  limit, output file), prints `Submitted batch job ID` at once and runs the array in the
  background, each array task as `bash SCRIPT` with SLURM_ARRAY_TASK_ID, SLURM_JOB_ID,
  SLURM_ARRAY_JOB_ID and SLURM_NODELIST set, its output to the `--output` file (%A, %a).
- `srun [options] CMD ...`: runs CMD (options dropped: one node, one task).
- `scontrol show hostnames LIST`: one name per line; `scontrol requeue`: does nothing.
- `squeue -h -j ID`: a line while job ID runs; `scancel ID`: stops it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("MOAI_SLURM_STAND_IN", "/tmp/moai-slurm-stand-in"))


def sbatch(args: list[str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    script = Path(args[-1]).read_text()
    counter = STATE / "next_id"
    job = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job + 1))
    (STATE / f"job-{job}.sh").write_text(script)
    env = {}
    for arg in args[:-1]:
        if arg.startswith("--export="):
            env.update(kv.split("=", 1) for kv in arg.split("=", 1)[1].split(",") if "=" in kv)
    (STATE / f"job-{job}.env").write_text("\n".join(f"{k}={v}" for k, v in env.items()))
    runner = subprocess.Popen([sys.executable, __file__, "__run__", str(job)], start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (STATE / f"job-{job}.pid").write_text(str(runner.pid))
    print(f"Submitted batch job {job}")


def run_job(job: str) -> None:
    script = (STATE / f"job-{job}.sh").read_text()
    extra = dict(line.split("=", 1) for line in (STATE / f"job-{job}.env").read_text().splitlines() if "=" in line)
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)(?:%(\d+))?", script, re.M)
    output = re.search(r"^#SBATCH --output=(\S+)", script, re.M)
    first, last, limit = (int(array[1]), int(array[2]), int(array[3] or 2)) if array else (0, 0, 1)
    running: list[subprocess.Popen] = []
    try:
        for index in range(first, last + 1):
            while sum(p.poll() is None for p in running) >= limit:
                time.sleep(0.1)
            env = {**os.environ, **extra, "SLURM_ARRAY_TASK_ID": str(index), "SLURM_ARRAY_JOB_ID": job,
                   "SLURM_JOB_ID": f"{job}_{index}", "SLURM_NODELIST": socket.gethostname()}
            log = output[1].replace("%A", job).replace("%a", str(index)) if output else os.devnull
            with open(log, "ab") as fh:
                running.append(subprocess.Popen(["bash", "-c", script], env=env, stdout=fh, stderr=fh))
        for p in running:
            p.wait()
    finally:
        (STATE / f"job-{job}.pid").unlink(missing_ok=True)


def srun(args: list[str]) -> None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-n", "-N", "-c") else 1
    os.execvp(args[i], args[i:])


def main() -> None:
    name, args = Path(sys.argv[0]).name, sys.argv[1:]
    if args[:1] == ["__run__"]:
        run_job(args[1])
    elif name == "sbatch":
        sbatch(args)
    elif name == "srun":
        srun(args)
    elif name == "scontrol":
        if args[:2] == ["show", "hostnames"]:
            print("\n".join(args[2].split(",")))
    elif name == "squeue":
        job = args[args.index("-j") + 1].split("_")[0]
        if (STATE / f"job-{job}.pid").exists():
            print(f"{job} stand-in R")
    elif name == "scancel":
        pid_file = STATE / f"job-{args[0].split('_')[0]}.pid"
        if pid_file.exists():
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


if __name__ == "__main__":
    main()
