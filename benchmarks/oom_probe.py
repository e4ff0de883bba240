"""The first-step out-of-memory retry of `moai pretrain`, caused on purpose: for gpu_check.py.

    python benchmarks/oom_probe.py '{"tok": DIR, "rows": DIR, "work": DIR, "seq": 128,
                                     "model": "small", "fit": 8, "cpu": true}'

prints one JSON line: the exit code, the micro batch the run started with (8 x `fit`) and ended
with, the retries recorded in run.yaml's `plan_retries`, whether final_model/ was written, and
the memory cap. The run goes through `prepare_run` and `launch_run`, as `moai pretrain` does; its
micro batch is made 8x too big after planning (the guards would refuse it before), then the
process is capped and the run launched:

- CUDA: the allocator is capped (`torch.cuda.set_per_process_memory_fraction`) at the geometric
  mean of the planner's reserved estimates at `fit` and at 8 x `fit`.
- CPU: a normal run at `fit` first measures this process's peak address space (VmPeak); the
  capped run gets an address-space limit (RLIMIT_AS) of that plus the estimated cost of two
  more micro batches (start with MALLOC_MMAP_THRESHOLD_=65536: freed tensors go back to the OS).

A failure is a JSON line too (`error`), never a traceback alone.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import traceback
from pathlib import Path


def prepared(spec: dict, out: Path, **flags):
    """`prepare_run` of a pretraining run of `spec["model"]` on the prepared rows into `out`
    (checks, plan, run.yaml), as `moai pretrain` prepares one."""
    from moai_llm.training.launcher.runner import prepare_run
    from moai_llm.training.settings import resolve_settings

    s, sources = resolve_settings("pretrain", flags={
        "model": spec["model"], "tokenizer": str(spec["tok"]), "dataset": [str(spec["rows"])],
        "output_dir": str(out), "seq_len": spec["seq"], "nproc": 1, "tensorboard": False,
        "save_steps": 10**9, "logging_steps": 10**6, **flags})
    return prepare_run(s, sources, argv=["gpu_check"])


def oom_run(spec: dict) -> dict:
    """Plan a run, make its micro batch 8x too big, cap the memory, launch it."""
    import dataclasses

    from moai_llm.hardware.memory import ModelShape
    from moai_llm.hardware.planner import estimate_for
    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import launch_run
    from moai_llm.training.record import read_record

    set_quiet(True)
    fit, out = spec["fit"], Path(spec["work"]) / "oom"
    flags = dict(max_steps=1, micro_batch_size=fit, gradient_accumulation_steps=8, compile=False)
    record = prepared(spec, out, **flags)
    shape, plan = ModelShape.from_config(record.model_config), record.plan()
    est = {m: estimate_for(shape, plan, m) for m in (fit, 3 * fit, 8 * fit)}
    if spec["cpu"]:
        peak_vm = uncapped_peak_vm(spec, {**flags, "gradient_accumulation_steps": 1})
        calibration = {"uncapped_peak_vm_gib": round(peak_vm / 2**30, 3)}
        cap = peak_vm + est[3 * fit].peak_allocated - est[fit].peak_allocated
    else:
        calibration = {"estimate_reserved_gib": {m: round(e.peak_reserved / 2**30, 2)
                                                 for m, e in est.items()}}
        cap = int(math.sqrt(est[fit].peak_reserved * est[8 * fit].peak_reserved))
    too_big = dataclasses.replace(plan, micro_batch_size=fit * 8, gradient_accumulation_steps=1)
    record.planned = too_big.to_dict()
    record.write(out)
    set_memory_cap(cap, spec["cpu"])
    code, _ = launch_run(record, show_progress=False)
    result = {"exit_code": code, "first_micro": fit * 8, "cap_gib": round(cap / 2**30, 3),
              **calibration, "finished": (out / "final_model").is_dir(), "final_micro": None,
              "retries": []}
    if (out / "run.yaml").is_file():  # a failed fresh launch leaves none: its warnings say why
        after = read_record(out)
        result.update(final_micro=after.plan().micro_batch_size,
                      final_accumulation=after.plan().gradient_accumulation_steps,
                      retries=after.plan_retries)
    result["retried"] = code == 0 and bool(result["retries"]) and result["final_micro"] < fit * 8
    return result


def uncapped_peak_vm(spec: dict, flags: dict) -> int:
    """The peak address space of this process (VmPeak) after a normal run at the fitting micro
    batch (one micro-batch a step: accumulation adds no memory): what the capped run may take,
    before its margin."""
    from moai_llm.training.launcher.runner import launch_run

    out = Path(spec["work"]) / "oom-uncapped"
    code, _ = launch_run(prepared(spec, out, **flags), show_progress=False)
    if code != 0:
        raise RuntimeError(f"the uncapped run at micro batch {flags['micro_batch_size']} "
                           f"failed (exit {code})")
    shutil.rmtree(out, ignore_errors=True)
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmPeak"))


def set_memory_cap(cap: int, cpu: bool) -> None:
    """Cap this process: its address space on the CPU, its CUDA allocator's share of the GPU."""
    if cpu:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        return
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), 0)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        result = oom_run(json.loads(sys.argv[1]))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:1500],
                  "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
