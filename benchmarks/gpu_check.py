"""One GPU check: what moai claims on a GPU, measured by one command in under 8 minutes on one H200.

    python benchmarks/gpu_check.py                    # CUDA: done within 465 s, writes benchmarks/results/gpu_check/
    python benchmarks/gpu_check.py --cpu --out DIR    # the same code on the CPU, tiny models: ~40 s

Parts, each with its own time budget (450 s in all on CUDA, and a hard stop at 465 s: a part takes
no new case after its budget and is interrupted at 1.25x it or at the hard stop; a failure or an
overrun is recorded and the next part runs; the JSON and the Markdown are rewritten after every
part; the exit code is 0 when every part ran, 1 otherwise, 2 without a CUDA device):

1. attention: flash-attn (when installed; said when not) / FlexAttention / SDPA / eager against
   eager in fp32, on packed rows of random documents (bf16 on CUDA): outputs and gradients (flex
   on the CPU: forward only, torch has no CPU backward).
2. memory: the planner's predicted peak (`estimate_for(plan)`) against
   `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, for 0.5b and 2b at two
   micro batches each (benchmarks/memory_probe.py: two optimizer steps of two micro-batches of
   packed rows, the model built with the plan's attention). Goal: within 15%, on CUDA; the CPU
   mode's peak RSS is a smoke check of the same code, not a test of the goal.
3. throughput: tokens/s and MFU of 0.5b and 2b, compiled and not, through moai's own training
   step: the run prepared by `prepare_run` (settings -> plan -> run.yaml, as `moai pretrain`
   does), its parts built by the loop's `_build` (what `train` runs before its first step) and
   stepped by its `TrainStep`; `train` itself is not called because it saves a checkpoint and
   final_model/ at the end (~30 GB for 2b). MFU = model FLOPs (`metrics.FlopCounter`: 6N plus
   causal attention over the real documents) / (seconds x the recorded dense peak). The models
   use the check's tokenizer (8,000 tokens), so they are a little smaller than the presets (the
   rows say their parameters). Goal: 2b bf16 >= 45%.
4. oom: the first-step out-of-memory retry through `moai pretrain`'s launch path, with a micro
   batch made 8x too big on purpose and the memory capped, in a child process
   (benchmarks/oom_probe.py). The run must finish with a smaller plan, the replaced ones in
   run.yaml's `plan_retries`.

CPU mode (`--cpu`) runs the same code with the tiny/small presets and rows of 128 tokens, so
tests/benchmarks/test_gpu_check.py keeps this script working in CI; its figures say nothing
about GPUs (no MFU: there is no recorded peak for a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # embedded_rows

GPU = {"seq": 2048, "vocab": 8000, "memory": [("0.5b", 2), ("0.5b", 4), ("2b", 1), ("2b", 2)],
       "throughput": [("2b", True), ("2b", False), ("0.5b", True), ("0.5b", False)],
       "warm": 3, "steps": 10, "oom_model": "0.5b", "oom_fit": 2, "total": 465,
       "budgets": {"attention": 50, "memory": 110, "throughput": 200, "oom": 90}}
CPU = {"seq": 128, "vocab": 600, "memory": [("small", 2), ("small", 8)],
       "throughput": [("tiny", False), ("tiny", True), ("small", False)],
       "warm": 2, "steps": 4, "oom_model": "small", "oom_fit": 8, "micro": 4, "total": 600,
       "budgets": {"attention": 30, "memory": 60, "throughput": 120, "oom": 90}}
MEMORY_GOAL, MFU_GOAL = 0.15, 0.45
CPU_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors go back to the OS: RSS follows


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise PartTimeout in this (main) thread after `seconds` (checked between bytecodes)."""
    def stop(signum, frame):
        raise PartTimeout(f"stopped after {seconds:.0f} s (its budget, or the check's hard stop)")
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Check:
    """The results of every part, written to OUT/gpu_check.json and OUT/gpu_check.md."""

    def __init__(self, out: Path, cpu: bool, started: float):
        import torch

        self.out, self.cpu = out, cpu
        self.conf = CPU if cpu else GPU
        self.device = "cpu" if cpu else "cuda"
        self.ends = started + self.conf["total"]
        self.work = Path(tempfile.mkdtemp(prefix="moai-gpu-check-"))
        self.data: dict = {"mode": "cpu" if cpu else "cuda", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "machine": machine(torch, cpu), "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn) -> None:
        """Run part `name`: status "ok", "error" (it raised, or said `error`) or "skipped"."""
        started = time.perf_counter()
        left = self.ends - started
        budget = min(self.conf["budgets"][name], left)
        if left < 5:
            result = {"status": "skipped", "error": f"no time left of the check's {self.conf['total']} s"}
        else:
            try:
                with deadline(min(budget * 1.25, left)):
                    result = fn(self, started + budget)
                failed = [r for r in result.get("rows", []) if "error" in r]
                if failed and not result.get("error"):
                    result["error"] = f"{len(failed)} of {len(result['rows'])} cases failed"
                result = {"status": "error" if result.get("error") else "ok", **result}
            except Exception as exc:  # one part's failure must not lose the others
                result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000],
                          "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - started, 1)
        self.data["parts"][name] = result
        print(f"{name}: {result['status']} in {result['seconds']} s", flush=True)
        self.write()

    def write(self) -> None:
        from moai_llm.atomic import write_text_atomic

        write_text_atomic(self.out / "gpu_check.json", json.dumps(self.data, indent=2, default=str) + "\n")
        write_text_atomic(self.out / "gpu_check.md", render(self.data))


def machine(torch, cpu: bool) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 2)}
    try:
        import flash_attn
        info["flash_attn"] = flash_attn.__version__
    except Exception:
        info["flash_attn"] = None
    if not cpu:
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def packed_positions(batch: int, seq: int, seed: int = 0):
    """Rows of documents of random lengths (short to half a row), position_ids restarting."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        lengths, left = [], seq
        while left > 0:
            n = min(left, int(torch.randint(1, max(2, seq // 2), (1,), generator=g)))
            lengths.append(n)
            left -= n
        rows.append(torch.cat([torch.arange(n) for n in lengths]))
    return torch.stack(rows)


def part_attention(check: Check, until: float) -> dict:
    import torch

    from moai_llm.modeling import attention as attn

    cpu = check.cpu
    dtype = torch.float32 if cpu else torch.bfloat16
    b, h, hkv, t, d = (2, 4, 2, 256, 32) if cpu else (2, 16, 4, 2048, 128)
    pos = packed_positions(b, t).to(check.device)
    gen = torch.Generator(device=check.device).manual_seed(0)
    q, k, v = (torch.randn(b, n, t, d, device=check.device, generator=gen) for n in (h, hkv, hkv))
    upstream = torch.randn(b, h, t, d, device=check.device, generator=gen)
    ref_plan = attn.AttentionPlan.build("eager", pos, None, q_len=t, past_len=0, dtype=torch.float32)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    want = attn.eager_attention(*leaves, ref_plan, d**-0.5, 0.0)
    want_grads = torch.autograd.grad(want, leaves, upstream)
    want = want.detach()
    rows, tol = [], 1e-4 if cpu else 3e-2
    for name in (attn.FLASH, attn.FLEX, "sdpa", "eager"):
        if name == attn.FLASH and (cpu or attn.flash_attn_func is None):
            rows.append({"backend": name, "skipped": "CUDA only" if cpu else "flash-attn is not installed"})
            continue
        grads = not (cpu and name == attn.FLEX)  # no FlexAttention backward on the CPU
        inputs = [x.to(dtype).clone().requires_grad_(grads) for x in (q, k, v)]
        with torch.set_grad_enabled(grads):
            plan = attn.AttentionPlan.build(name, pos, None, q_len=t, past_len=0, dtype=dtype)
            got = attn.BACKENDS[plan.backend](*inputs, plan, d**-0.5, 0.0)
        row = {"backend": name, "ran_as": plan.backend, "dtype": str(dtype).split(".")[-1],
               "out_max_diff": float((got.detach().float() - want).abs().max() / want.abs().max())}
        if grads:
            got_grads = torch.autograd.grad(got, inputs, upstream.to(dtype))
            row["grad_max_diff"] = max(float((g.float() - w).abs().max() / w.abs().max())
                                       for g, w in zip(got_grads, want_grads, strict=True))
        row["equal"] = row["out_max_diff"] <= tol and row.get("grad_max_diff", 0.0) <= tol
        rows.append(row)
    return {"rows": rows, "tolerance": f"max |difference| / max |eager fp32| <= {tol}",
            "layout": f"{b} rows x {t} tokens of random documents, {h}/{hkv} heads x {d}",
            "all_equal": all(r.get("equal", True) for r in rows)}


def _plan(check: Check, config, seq: int, **choices):
    from moai_llm.hardware.planner import make_plan
    from moai_llm.hardware.probe import probe

    return make_plan(probe(str(check.work)), config, seq, nproc_per_node=1, **choices)


def each_case(cases: list[tuple], keys: tuple, until: float, fn) -> list[dict]:
    """`fn(*case)` for every case while the part's budget lasts; a case after it is skipped, one
    interrupted at the part's hard stop ends the part (the rows before it are kept), a failing
    one is recorded with its error."""
    rows, stopped = [], False
    for case in cases:
        head = dict(zip(keys, case, strict=True))
        if stopped or time.perf_counter() > until:
            rows.append({**head, "skipped": "over the part's time budget"})
            continue
        try:
            rows.append(fn(*case))
        except PartTimeout as exc:
            rows.append({**head, "skipped": str(exc)})
            stopped = True
        except Exception as exc:
            rows.append({**head, "error": f"{type(exc).__name__}: {exc}"[:500]})
        gc.collect()
    return rows


def one_memory(check: Check, name: str, micro: int, fixed: int) -> dict:
    from memory_probe import measure, run_cases

    from moai_llm.config import MoaiConfig
    from moai_llm.hardware.memory import ModelShape
    from moai_llm.hardware.planner import estimate_for

    seq, config = check.conf["seq"], MoaiConfig.from_preset(name)
    plan = _plan(check, config, seq, micro_batch_size=micro, gradient_accumulation_steps=2,
                 gradient_checkpointing=False, compile=False)
    args = (name, seq, micro, plan.precision, False, check.device, plan.loss_chunk_size, True,
            plan.attention)
    if check.cpu:  # a forked child per case: its peak RSS is the case's alone
        keys = ("config", "seq", "micro", "precision", "ckpt", "device", "chunk", "packed", "attention")
        got = run_cases([dict(zip(keys, args, strict=True))])[0]["peak_bytes"] - fixed
    else:
        got = measure(*args)["peak_bytes"]
    predicted = estimate_for(ModelShape.from_config(config), plan).peak_allocated
    return {"model": name, "micro": micro, "seq": seq, "precision": plan.precision,
            "attention": plan.attention, "predicted_gib": round(predicted / 2**30, 3),
            "measured_gib": round(got / 2**30, 3), "ratio": round(predicted / got, 3)}


def part_memory(check: Check, until: float) -> dict:
    from memory_probe import EMPTY_MODEL, run_cases

    fixed = run_cases([dict(config=EMPTY_MODEL, seq=16, micro=1)])[0]["peak_bytes"] if check.cpu else 0
    rows = each_case(check.conf["memory"], ("model", "micro"), until,
                     lambda name, micro: one_memory(check, name, micro, fixed))
    within = [abs(r["ratio"] - 1) <= MEMORY_GOAL for r in rows if "ratio" in r]
    if check.cpu:
        return {"rows": rows, "goal": f"within {MEMORY_GOAL:.0%} on CUDA: not evaluated on the CPU",
                "measured_as": "peak RSS of a forked child minus a near-empty model's: a smoke check "
                               "(the allocator's and autograd's overheads are not in the model)",
                "goal_met": None}
    return {"rows": rows, "goal": f"within {MEMORY_GOAL:.0%}",
            "measured_as": "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), "
                           "minus memory_allocated() before the model",
            "goal_met": all(within) if within else None, "cases_measured": f"{len(within)} of {len(rows)}"}


def setup_data(check: Check):
    """A tokenizer and packed rows from the embedded corpora (once)."""
    if hasattr(check, "tok"):
        return check.tok, check.rows
    from moai_llm import corpora

    from embedded_rows import embedded_rows

    check.tok, check.rows = embedded_rows(check.work, vocab_size=check.conf["vocab"], seq_len=check.conf["seq"],
                                          languages=tuple(corpora.languages()))
    return check.tok, check.rows


def prepared(check: Check, name: str, out: Path, **flags):
    """`prepare_run` of preset `name` on the check's rows into `out` (oom_probe.prepared)."""
    from oom_probe import prepared as prepare

    tok, rows = setup_data(check)
    return prepare({"model": name, "tok": tok, "rows": rows, "seq": check.conf["seq"]}, out, **flags)


def one_throughput(check: Check, name: str, compiled: bool) -> dict:
    import torch

    from moai_llm.training.worker.loop import _build
    from moai_llm.training.worker.metrics import device_peak_flops

    warm, steps = check.conf["warm"], check.conf["steps"]
    out = check.work / f"tp-{name}-{'compiled' if compiled else 'eager'}"
    record = prepared(check, name, out, max_steps=warm + steps, compile=compiled, learning_rate=1e-4,
                      gradient_accumulation_steps=1, micro_batch_size=check.conf.get("micro"))
    plan = record.plan()
    torch._dynamo.reset()
    cuda = not check.cpu
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run = _build(record.resolved())
    try:
        started = time.perf_counter()
        for k in range(warm):
            run.step(k, first=k == 0)
        sync()
        first = time.perf_counter() - started
        tokens = flops = data = 0.0
        started = time.perf_counter()
        for k in range(warm, warm + steps):
            r = run.step(k)
            tokens, flops, data = tokens + r.tokens, flops + r.flops, data + r.data_s
        sync()
        seconds = time.perf_counter() - started
        peak = device_peak_flops(plan, run.dist.device)
        params = sum(p.numel() for p in run.model.parameters())
    finally:
        run.metrics.close()
        del run
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        shutil.rmtree(out, ignore_errors=True)
    row = {"model": name, "compiled": compiled, "params_m": round(params / 1e6, 1),
           "micro": plan.micro_batch_size, "seq": plan.seq_len, "attention": plan.attention,
           "precision": plan.precision, "checkpointing": plan.gradient_checkpointing,
           "warmup_s": round(first, 1), "tokens_per_s": round(tokens / seconds, 1),
           "data_wait": round(data / seconds, 5),
           "mfu": round(flops / (seconds * peak), 4) if peak else None,
           "peak_tflops": peak / 1e12 if peak else None}
    if cuda:
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def part_throughput(check: Check, until: float) -> dict:
    from moai_llm.progress import set_quiet

    set_quiet(True)
    rows = each_case(check.conf["throughput"], ("model", "compiled"), until,
                     lambda name, compiled: one_throughput(check, name, compiled))
    two_b = [r["mfu"] for r in rows if r.get("model") == "2b" and r.get("mfu")]
    return {"rows": rows, "goal": f"2b bf16 MFU >= {MFU_GOAL:.0%}" if not check.cpu else
            "2b bf16 MFU >= 45% on CUDA: no MFU on the CPU (no recorded peak)",
            "goal_met": (max(two_b) >= MFU_GOAL) if two_b else None}


def part_oom(check: Check, until: float) -> dict:
    """The retry happens in a child process (a memory cap must not outlive the part)."""
    setup_data(check)
    gc.collect()
    if not check.cpu:
        import torch

        torch.cuda.empty_cache()  # what this process still holds is not the child's to lose
    spec = {"work": str(check.work), "tok": str(check.tok), "rows": str(check.rows), "cpu": check.cpu,
            "seq": check.conf["seq"], "model": check.conf["oom_model"], "fit": check.conf["oom_fit"]}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "oom_probe.py"), json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS="1", **CPU_MALLOC) if check.cpu else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=max(10.0, until - time.perf_counter() + 30))
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"the OOM child printed no result (exit {done.returncode}): {done.stderr[-1500:]}")
    result = json.loads(lines[-1])
    shutil.rmtree(check.work / "oom", ignore_errors=True)
    if not result.get("error") and not (result["retried"] and result["finished"]):
        result["error"] = f"the run did not finish after a retry (exit {result['exit_code']})"
    if result.get("error"):
        result["stderr"] = done.stderr[-1500:]
    return result


def render(data: dict) -> str:
    m = data["machine"]
    lines = [f"# moai GPU check ({data['mode']})", "",
             f"Started {data['started']}; torch {m['torch']}; device: {m.get('gpu', m.get('cpu') or 'CPU')}; "
             f"flash-attn: {m.get('flash_attn') or 'not installed'}; load average {m.get('load_average')}.", ""]
    if data["mode"] == "cpu":
        lines += ["CPU mode: tiny models, a smoke test of the script; no figure here says anything "
                  "about a GPU.", ""]
    for name, part in data["parts"].items():
        lines += [f"## {name}: {part['status']} ({part['seconds']} s)", ""]
        if part.get("error"):
            lines += ["```", part["error"], "```", ""]
        rows = part.get("rows")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
            lines.append("")
        skip = ("rows", "status", "seconds", "error", "traceback", "stderr")
        lines += [f"- {k}: {v}" for k, v in part.items() if k not in skip] + [""]
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) and abs(value) < 1e-2 and value else str(value)


def main() -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny models on the CPU (~40 s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check"))
    parser.add_argument("--parts", default="attention,memory,throughput,oom")
    args = parser.parse_args()
    parts = {"attention": part_attention, "memory": part_memory, "throughput": part_throughput,
             "oom": part_oom}
    unknown = [p for p in args.parts.split(",") if p not in parts]
    if unknown:
        print(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(parts)}",
              file=sys.stderr)
        return 2
    if args.cpu and any(os.environ.get(k) != v for k, v in CPU_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CPU_MALLOC})  # read at start
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for the CPU mode", file=sys.stderr)
        return 2
    check = Check(Path(args.out), args.cpu, started)
    try:
        for name in args.parts.split(","):
            check.run(name, parts[name])
    finally:
        shutil.rmtree(check.work, ignore_errors=True)
    print(f"written: {check.out / 'gpu_check.json'}, {check.out / 'gpu_check.md'}")
    return 0 if all(p["status"] == "ok" for p in check.data["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
