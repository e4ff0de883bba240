"""Memory and time of the LM loss at a large vocabulary: full-logits F.cross_entropy vs the seed's
method (chunking after the logits exist) vs moai's fused chunked loss over hidden states.

    python benchmarks/bench_loss.py            # vocab 122k, hidden 3840, 4 x 1024 tokens, fp32
    python benchmarks/bench_loss.py --quick    # vocab 32k, hidden 1024, 2 x 1024 tokens

Each measurement runs forward + backward of one loss in a FRESH subprocess, so peaks do not
leak between methods. Memory = peak RSS during the step minus RSS after the inputs and their
gradients were allocated (VmHWM is reset through /proc/self/clear_refs just before the step), so
it is the memory "beyond the gradients of the inputs". Gradients are set to None before the
step, as `zero_grad(set_to_none=True)` does. Methods run interleaved, round after round, because
the machine is shared; the table shows the median over rounds and ratios against full logits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GiB = 1024**3


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:  # "5" resets the peak resident set size (VmHWM) of this process (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes(reset_ok: bool) -> int:
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def seed_chunked_ce(logits, labels, chunk_size, ignore_index=-100):
    """The seed's method, restated: F.cross_entropy(sum) per chunk of existing logits."""
    import torch
    import torch.nn.functional as F

    total = logits.new_zeros(())
    for start in range(0, logits.shape[0], chunk_size):
        total = total + F.cross_entropy(
            logits[start : start + chunk_size],
            labels[start : start + chunk_size],
            ignore_index=ignore_index,
            reduction="sum",
        )
    return total / (labels != ignore_index).sum().clamp(min=1).to(torch.float32)


def worker(args) -> None:
    import torch
    import torch.nn.functional as F

    from moai_llm.losses import chunked_cross_entropy_loss, fused_linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden) * 0.02).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,))
    labels[:: args.tokens // 16] = -100  # a few unlabelled positions, as in real batches
    hidden.grad = torch.ones_like(hidden)  # touch the gradients so the baseline holds them
    weight.grad = torch.ones_like(weight)
    baseline = _rss_bytes()
    hidden.grad = weight.grad = None  # zero_grad(set_to_none=True)
    reset_ok = _reset_peak()
    start = time.perf_counter()
    if args.worker == "full":
        loss = F.cross_entropy(hidden @ weight.t(), labels)
    elif args.worker == "seed":
        loss = seed_chunked_ce(hidden @ weight.t(), labels, args.chunk)
    elif args.worker == "moai-logits":
        loss = chunked_cross_entropy_loss(hidden @ weight.t(), labels, chunk_size=args.chunk)
    elif args.worker == "fused":
        loss = fused_linear_cross_entropy(hidden, weight, labels, chunk_size=args.chunk)
    else:
        raise SystemExit(f"unknown method {args.worker}")
    loss.backward()
    seconds = time.perf_counter() - start
    peak = _peak_bytes(reset_ok)
    print(
        json.dumps(
            {
                "extra_bytes": peak - baseline,
                "seconds": seconds,
                "loss": loss.item(),
                "grad_w_sum": weight.grad.double().abs().sum().item(),
            }
        )
    )


def run_one(method: str, chunk: int, sizes: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--chunk", str(chunk),
           "--tokens", str(sizes.tokens), "--hidden", str(sizes.hidden),
           "--vocab", str(sizes.vocab)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="vocab 32k, hidden 1024, 2k tokens")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--chunks", default="1024,512", help="fused chunk sizes to measure")
    parser.add_argument("--seed-chunk", type=int, default=1024, help="chunk of the seed's method")
    parser.add_argument("--methods", default="full,seed,moai-logits,fused",
                        help="subset to run (full is always run: it is the reference)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=None, help="tokens (default 4 x 1024)")
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.tokens = args.tokens or (2048 if args.quick else 4096)
    args.hidden = args.hidden or (1024 if args.quick else 3840)
    args.vocab = args.vocab or (32_000 if args.quick else 122_000)
    chosen = set(args.methods.split(",")) | {"full"}
    methods = [("full", 0), ("seed", args.seed_chunk), ("moai-logits", args.seed_chunk)]
    methods += [("fused", int(c)) for c in args.chunks.split(",")]
    methods = [m for m in methods if m[0] in chosen]
    logits_gib = args.tokens * args.vocab * 4 / GiB
    print(f"tokens {args.tokens}, hidden {args.hidden}, vocab {args.vocab}, fp32 "
          f"(logits alone: {logits_gib:.2f} GiB); {args.rounds} interleaved rounds; "
          f"torch threads per worker: default", file=sys.stderr)  # fmt: skip
    results: dict[tuple[str, int], list[dict]] = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            res = run_one(m[0], m[1], args)
            results[m].append(res)
            print(f"round {r + 1}: {m[0]:<11} chunk {m[1]:>5}: "
                  f"{res['extra_bytes'] / GiB:6.2f} GiB  {res['seconds']:7.2f} s  "
                  f"loss {res['loss']:.6f}", file=sys.stderr)  # fmt: skip
    med = {m: (statistics.median(r["extra_bytes"] for r in rs),
               statistics.median(r["seconds"] for r in rs)) for m, rs in results.items()}  # fmt: skip
    full_mem, full_time = med[("full", 0)]
    ref_loss = results[("full", 0)][0]["loss"]
    labels = {"full": "full logits + F.cross_entropy", "seed": "seed: chunk after logits",
              "moai-logits": "moai chunked_cross_entropy_loss", "fused": "moai fused (hidden)"}  # fmt: skip
    print("| method | chunk | memory beyond input grads | time | memory / full | time / full "
          "| loss - full |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, (mem, sec) in med.items():
        diff = results[m][0]["loss"] - ref_loss
        print(f"| {labels[m[0]]} | {m[1] or '-'} | {mem / GiB:.2f} GiB | {sec:.2f} s "
              f"| {mem / full_mem:.3f} | {sec / full_time:.2f}x | {diff:+.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
