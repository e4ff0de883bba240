"""The torchrun entry: `python -m moai_llm.training.worker --run-yaml OUT/run.yaml`.

Each process reads the run's settings from run.yaml and the plan it was launched with from
`MOAI_PLAN_JSON` (launch sets it; after a first-step OOM retry it holds the halved plan),
then trains. Exit codes: 0 done, 1 run failure (message on stderr), 2 bad input,
75 out of memory at the first step (launch retries with half the micro batch).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moai_llm.training.worker")
    parser.add_argument("--run-yaml", required=True)
    args = parser.parse_args(argv)

    from moai_llm.errors import MoaiInputError, MoaiRunError
    from moai_llm.hardware.launch import FirstStepOOM, exit_first_step_oom, plan_from_env
    from moai_llm.hardware.plan import Plan
    from moai_llm.progress import console
    from moai_llm.training.loop import train
    from moai_llm.training.runner import read_run_yaml
    from moai_llm.training.settings import TrainSettings

    try:
        spec = read_run_yaml(args.run_yaml)
        settings = TrainSettings.from_dict(spec["settings"])
        plan = plan_from_env() or Plan.from_dict(spec["plan"])
        train(settings, plan, settings.output_dir, spec.get("model_config"))
    except FirstStepOOM as exc:
        exit_first_step_oom(str(exc))
    except (MoaiInputError, MoaiRunError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        if exc.hint:
            console.print(f"[dim]hint:[/] {exc.hint}", highlight=False)
        return 2 if isinstance(exc, MoaiInputError) else 1
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
