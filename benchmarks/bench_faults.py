"""Fault injection, the long version: tiny runs killed with SIGKILL K = 1..4 times each, at
seeded moments inside (fault points in steps, in every gap of a checkpoint write, in the
removal of old checkpoints, in the final save) and outside (SIGKILL from another process after
a random delay), resumed each time with `--resume auto`, and compared with one uninterrupted
run of the same settings:

- final weights: every tensor of final_model/model.safetensors torch.equal (fp32, CPU), and
  the largest absolute difference;
- outputs: after every kill, every checkpoints/step-N is a complete checkpoint of step N;
  at the end metrics.jsonl has the reference's (step, loss) lines exactly, the checkpoints
  and their trainer_state.json are the reference's, no temporary folder or lock file is left;
  `--resume auto` once more says "complete" and changes no byte.

It also times `fault_point()` with no fault asked for (what every normal run pays).

    python benchmarks/bench_faults.py                  # 10 seeds x K = 1..4 (~6-10 minutes)
    python benchmarks/bench_faults.py --seeds 2        # a quick look
    python benchmarks/bench_faults.py --part destructive   # moai pointed at users' folders (~2 minutes)

`--part destructive` runs the cases of benchmarks/destructive.py instead (issue 22's findings:
a user's folders given as moai's output, a dataset rebuilt under a run, damaged checkpoints)
and counts refusals, tracebacks, hangs and files lost; `--part all` runs both.

The runs are real processes forked from a warm server (tests/training/fault_runs.py), killed
with a real SIGKILL; the tokenizer and packed rows are built from the embedded corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "training"))
sys.path.insert(0, str(ROOT / "tests"))  # embedded_rows
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fault_runs import (  # noqa: E402
    latest_step,
    leftovers,
    losses,
    moai,
    pick_kill,
    problems,
    weight_difference,
)

STEPS, SAVE, KEEP, EVAL = 12, 3, 2, 4
# Where the kills of a run land: anywhere for all but the last, which may also be the final
# save (after which the run is complete and nothing is left to kill).
BEFORE_END = ["step", "checkpoint", "checkpoint", "checkpoint", "start", "outside", "outside"]
LAST = BEFORE_END + ["final", "final", "end"]


def inputs(root: Path) -> tuple[Path, Path]:
    from moai_llm.progress import set_quiet

    from embedded_rows import embedded_rows

    set_quiet(True)
    tok, data = embedded_rows(root, vocab_size=600, seq_len=64)
    set_quiet(False)
    return tok, data


def args(tok: Path, data: Path, out: Path) -> list:
    return ["pretrain", "--model", "tiny", "--tokenizer", tok, "--dataset", data, "--output-dir", out,
            "--max-steps", str(STEPS), "--batch-size", "2", "--gradient-accumulation-steps", "1",
            "--logging-steps", "1", "--save-steps", str(SAVE), "--save-total-limit", str(KEEP),
            "--eval-steps", str(EVAL), "--resume", "auto"]


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): (None if p.is_dir() else p.read_bytes()) for p in sorted(out.rglob("*"))}


def killed_run(seed: int, k: int, tok: Path, data: Path, out: Path, reference: Path,
               full_s: float) -> dict:
    """One run killed `k` times (seeded), resumed to the end; what held and what did not."""
    rng = random.Random(seed * 100 + k)
    kills, broken, missed = [], [], []
    while len(kills) < k:
        where = rng.choice(LAST if len(kills) == k - 1 else BEFORE_END)
        if where == "outside":  # a moment within what is left of the run (or its start-up)
            left = (STEPS - latest_step(out)) / STEPS
            run = moai(args(tok, data, out), kill_after=rng.uniform(0.05, 0.6 * full_s * max(left, 0.2)))
            spec = "outside"
        else:
            spec = pick_kill(rng, out, STEPS, SAVE, KEEP, where)
            run = moai(args(tok, data, out), kill_at=spec)
        if run.code not in (0, -9):
            broken.append(f"exit {run.code} after {kills}: {run.output[-300:]}")
            break
        if run.killed:
            kills.append(spec)
            broken += [f"after {spec}: {p}" for p in problems(out)]
        if run.code == 0:  # an outside kill that came after the end: nothing left to kill
            missed.append(spec)
            break
    finish = moai(args(tok, data, out))
    if finish.code != 0:
        broken.append(f"final resume: exit {finish.code}: {finish.output[-300:]}")
        return {"kills": kills, "missed": missed, "equal": False, "diff": float("inf"), "broken": broken}
    same, diff = weight_difference(reference / "final_model" / "model.safetensors",
                                   out / "final_model" / "model.safetensors")
    if losses(out) != losses(reference):
        broken.append("metrics.jsonl differs from the reference")
    for state in sorted((reference / "checkpoints").glob("step-*/trainer_state.json")):
        mine = out / state.relative_to(reference)
        if not mine.is_file() or mine.read_text() != state.read_text():
            broken.append(f"{state.parent.name} differs")
    broken += [f"left over: {x}" for x in leftovers(out)]
    before = snapshot(out)
    again = moai(args(tok, data, out))
    if again.code != 0 or "complete" not in again.output or snapshot(out) != before:
        broken.append("resuming the finished run changed it")
    return {"kills": kills, "missed": missed, "equal": same, "diff": diff, "broken": broken}


def fault_point_cost() -> float:
    """Nanoseconds a fault_point() call costs when no fault is asked for."""
    from moai_llm.faults import arm, fault_point

    for key in ("MOAI_FAULT_KILL_AT", "MOAI_FAULT_STOP_AT", "MOAI_FAULT_LOG"):
        os.environ.pop(key, None)
    arm()
    n = 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        fault_point("step.end")
    return (time.perf_counter() - t0) / n * 1e9


def report(results: list[dict], cost_ns: float, step_ms: float, seconds: float) -> None:
    print(f"\n{'K':>2} {'runs':>5} {'kills':>6} {'inside':>7} {'outside':>8} {'equal':>6} {'max diff':>9} {'problems':>9}")
    for k in sorted({r["k"] for r in results}):
        rows = [r for r in results if r["k"] == k]
        kills = [s for r in rows for s in r["kills"]]
        print(f"{k:>2} {len(rows):>5} {len(kills):>6} {sum(s != 'outside' for s in kills):>7} "
              f"{kills.count('outside'):>8} {sum(r['equal'] for r in rows):>6} "
              f"{max(r['diff'] for r in rows):>9.3g} {sum(len(r['broken']) for r in rows):>9}")
    kills = [s for r in results for s in r["kills"]]
    survived = sum(len(r["kills"]) for r in results if r["equal"] and not r["broken"])
    print(f"\nkills survived with difference 0 and clean outputs: {survived} of {len(kills)} "
          f"({len(results)} runs, {seconds / 60:.1f} min, load average {os.getloadavg()[0]:.1f})")
    missed = sum(len(r["missed"]) for r in results)
    if missed:
        print(f"outside kills that came after the run had finished (nothing to kill): {missed}")
    points = Counter(s.split("#")[0] for s in kills)
    print("killed at: " + ", ".join(f"{p} {n}" for p, n in points.most_common()))
    print(f"fault_point() with no fault asked: {cost_ns:.0f} ns a call; a tiny step takes "
          f"{step_ms:.1f} ms ({cost_ns / (step_ms * 1e6):.1e} of a step)")
    for r in results:
        for problem in r["broken"]:
            print(f"  seed {r['seed']} K={r['k']}: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-kills", type=int, default=4)
    parser.add_argument("--part", choices=["kills", "destructive", "all"], default="kills")
    parser.add_argument("--exclude", action="append", default=[],
                        help="skip destructive cases whose name holds this text (e.g. '-o /' on old code)")
    opts = parser.parse_args()
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    tok, data = inputs(root)
    if opts.part != "kills":
        destructive_part(root, tok, data, opts.exclude)
        if opts.part == "destructive":
            return
    reference = root / "reference"
    assert moai(args(tok, data, reference)).code == 0  # (starts the warm server too)
    again = root / "reference-again"
    full = moai(args(tok, data, again))  # how long a whole run takes, and that runs repeat exactly
    assert full.code == 0 and weight_difference(reference / "final_model" / "model.safetensors",
                                                again / "final_model" / "model.safetensors")[0]
    step_ms = min(float(json.loads(x)["elapsed_s"]) for x in (reference / "metrics.jsonl").read_text().splitlines()
                  if '"elapsed_s"' in x and json.loads(x)["step"] == 2) * 1000 / 2
    results = []
    for seed in range(opts.seeds):
        for k in range(1, opts.max_kills + 1):
            out = root / f"s{seed}-k{k}"
            result = killed_run(seed, k, tok, data, out, reference, full.seconds)
            results.append({"seed": seed, "k": k, **result})
            print(f"seed {seed} K={k}: {' / '.join(result['kills']) or '-'} -> "
                  f"{'equal' if result['equal'] else 'DIFFERENT'} {result['diff']:.3g}"
                  + (f" ({len(result['broken'])} problems)" if result["broken"] else ""), flush=True)
    report(results, fault_point_cost(), step_ms, time.perf_counter() - t0)


def destructive_part(root: Path, tok: Path, data: Path, exclude: list[str]) -> None:
    """The destructive cases (benchmarks/destructive.py) against a finished tiny run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import destructive

    t0 = time.perf_counter()
    given = destructive.Inputs(tok, data, root / "finished-run")
    finished = moai([str(a) for a in destructive.pretrain(root, given, given.run)])
    assert finished.code == 0, finished.output[-2000:]
    results = destructive.run_all(root / "destructive", given, exclude)
    destructive.report(results)
    print(f"({time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
