"""The worker process: `python -m moai_llm.training.worker --run-yaml OUT/run.yaml`.

Each process reads everything from run.yaml, as the launcher resolved it (training/resolved.py):
the settings, the plan (after a first-step OOM retry, the rewritten one), the schedule, the model
config, the base model and its growth, the checkpoint to resume from; then trains.
Exit codes: 0 done, 1 run failure (message on stderr), 2 bad input (a full disk included),
75 out of memory at the first step (launch.py retries with half the micro batch). A worker
dies with torchrun, which dies with the launcher that holds the run folder's lock.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moai_llm.training.worker")
    parser.add_argument("--run-yaml", required=True)
    args = parser.parse_args(argv)

    import torch

    from moai_llm.errors import MoaiInputError, MoaiRunError
    from moai_llm.progress import console
    from moai_llm.training.record import read_record
    from moai_llm.training.worker.exits import (
        FirstStepOOM,
        die_with_parent,
        exit_first_step_oom,
        record_exit_code,
    )
    from moai_llm.training.worker.loop import train

    die_with_parent()  # a killed launcher takes torchrun and its workers with it
    try:
        train(read_record(args.run_yaml).resolved())
    except FirstStepOOM as exc:
        exit_first_step_oom(str(exc))
    except (MoaiInputError, MoaiRunError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"[dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
        code = 2 if isinstance(exc, MoaiInputError) else 1
        record_exit_code(code)
        return code
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
