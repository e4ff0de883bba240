"""Compiled decoder blocks on the CPU, through `moai pretrain`: what compiling costs once against
what it saves per step, i.e. after how many steps `--compile` pays off (the planner's CPU rule).

    python benchmarks/bench_compile.py [--steps 40] [--rounds 2] [--seq 256 --batch 4]

By default the run `moai quickstart` makes (the `small` preset, an 8k byte-level BPE tokenizer
trained on the embedded ko/en/ja/zh corpora, packed rows of 256 tokens, 4 rows per step, fp32;
`--seq`/`--batch` change the rows), trained by `moai pretrain` in a fresh process per run, three
ways, interleaved round by round:

  eager     --no-compile
  cold      --compile with an empty inductor cache (TORCHINDUCTOR_CACHE_DIR of its own): what
            a first run on a machine pays
  warm      --compile again with the cache the cold run filled (later runs on the same machine)

From metrics.jsonl (`--logging-steps 1`): the first step's time (compilation included), the
whole run's time (recompilations included: the band of short documents changes width with the
documents of a batch, and dynamo compiles again when it first sees a new one) and the median
step after the first five (the steady state); medians over the rounds. Break-even = steps +
(compiled run - eager run) / (eager step - compiled step): the run length from which compiling
wins, if the recompilations seen so far were all. Prints a Markdown table and the load
average; writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # embedded_rows


def setup(work: Path, seq: int) -> tuple[Path, Path]:
    """The quickstart's tokenizer and packed rows of `seq` tokens."""
    from moai_llm import corpora

    from embedded_rows import embedded_rows

    return embedded_rows(work, vocab_size=8000, seq_len=seq, languages=tuple(corpora.languages()))


def one_run(work: Path, tok: Path, data: Path, name: str, steps: int, cache: Path, batch: int) -> dict:
    out = work / f"run-{name}-{time.time_ns()}"
    flag = "--no-compile" if name == "eager" else "--compile"
    cmd = [sys.executable, "-m", "moai_cli", "pretrain", "--model", "small", "--tokenizer", str(tok),
           "--dataset", str(data), "--output-dir", str(out), "--max-steps", str(steps),
           "--batch-size", str(batch), "--gradient-accumulation-steps", "1", "--logging-steps", "1",
           "--save-steps", str(10 * steps), "--learning-rate", "3e-3", flag, "--json"]
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    elapsed = {r["step"]: r["elapsed_s"] for r in lines if "elapsed_s" in r}
    diffs = [elapsed[k] - elapsed[k - 1] for k in range(6, steps + 1)]
    return {"first_s": elapsed[1], "total_s": elapsed[steps], "step_s": statistics.median(diffs),
            "loss": lines[-1].get("loss")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    tok, data = setup(work, args.seq)
    results: dict[str, list[dict]] = {"eager": [], "cold": [], "warm": []}
    load = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        cache = work / f"inductor-{rnd}"  # empty for the cold run, then reused by the warm one
        names = ["eager", "cold", "warm"] if rnd % 2 == 0 else ["cold", "warm", "eager"]
        for name in names:
            r = one_run(work, tok, data, name, args.steps, cache, args.batch)
            results[name].append(r)
            print(f"round {rnd + 1} {name:5s} first step {r['first_s']:6.2f} s, step "
                  f"{r['step_s'] * 1000:6.1f} ms, loss {r['loss']}", flush=True)
        load.append(os.getloadavg()[0])
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("first_s", "total_s", "step_s")}
           for k, v in results.items()}
    eager = med["eager"]
    print(f"\nload average (1 min) {min(load):.1f}-{max(load):.1f}; threads: torch default; "
          f"{args.steps} steps x {args.rounds} rounds; `small`, {args.batch} x {args.seq} tokens, fp32")
    print(f"| run | first step (s) | {args.steps} steps (s) | steady step (ms) | step ÷ eager | "
          "break-even (steps) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in med.items():
        saved = eager["step_s"] - m["step_s"]
        cost = m["total_s"] - eager["total_s"]
        even = "-" if name == "eager" else (f"{args.steps + cost / saved:,.0f}" if saved > 0 else "never")
        print(f"| {name} | {m['first_s']:.2f} | {m['total_s']:.1f} | {m['step_s'] * 1000:.0f} | "
              f"{m['step_s'] / eager['step_s']:.3f} | {even} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
