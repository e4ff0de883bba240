"""Memory model vs measured GPU peak: torch.cuda.max_memory_allocated() of real training steps
against moai_llm.hardware.memory.estimate(...).peak_allocated (goal: within 15%).

    python benchmarks/bench_memory_gpu.py            # all cases (needs ~60 GiB of GPU memory)
    python benchmarks/bench_memory_gpu.py --quick    # two small cases
    python benchmarks/bench_memory_gpu.py --cpu      # the CPU check (peak RSS), no GPU needed

Each case: MoaiForCausalLM in fp32 master weights, the plan's precision (bf16 autocast),
fused AdamW, moai's fused chunked loss through model(input_ids, labels=...), two optimizer
steps of two micro-batches (the steady state: gradients and AdamW states exist during the
measured forward/backward). Prints one row per case with the ratio predicted/measured, and
also max_memory_reserved against the estimate's peak_reserved minus context and NCCL.
Without a CUDA device it says so and exits 0. The measuring code is
benchmarks/memory_probe.py (shared with tests/hardware/test_memory.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = [
    # model preset, seq_len, micro batch, precision, gradient checkpointing, packed rows
    ("small", 1024, 16, "bf16", False, False),
    ("0.5b", 1024, 4, "bf16", False, False),
    ("0.5b", 1024, 4, "bf16", False, True),
    ("0.5b", 1024, 8, "bf16", True, True),
    ("2b", 1024, 2, "bf16", False, True),
    ("2b", 2048, 4, "bf16", True, True),
    ("0.5b", 1024, 2, "fp32", False, False),
]
CHUNK = 2048
CPU_MODEL = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=8000, tie_word_embeddings=False,
                 max_position_embeddings=1024)
CPU_CASES = [(128, 4, "fp32", False, False), (128, 4, "fp32", True, False),
             (128, 4, "bf16", False, False), (256, 8, "fp32", False, False),
             (256, 8, "fp32", True, False), (256, 8, "fp32", False, True),
             (256, 8, "bf16", False, True)]


def cpu_main() -> int:
    """Peak RSS of each case in a forked child, minus a near-empty model's (fixed step cost)."""
    from memory_probe import EMPTY_MODEL

    from moai_llm.hardware.memory import estimate

    cases = [dict(config=EMPTY_MODEL, seq=16, micro=1)] + [
        dict(config=CPU_MODEL, seq=s, micro=m, precision=p, ckpt=c, packed=k)
        for s, m, p, c, k in CPU_CASES]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("memory_probe.py")), str(path)],
                             capture_output=True, text=True, env=env, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    fixed = rows[0]["peak_bytes"]
    print(f"# CPU, peak RSS minus a near-empty model's ({fixed / 2**20:.1f} MiB); model "
          f"H{CPU_MODEL['hidden_size']} x {CPU_MODEL['num_hidden_layers']} layers, vocab {CPU_MODEL['vocab_size']}")
    print("| seq | micro | precision | ckpt | packed | predicted MiB | measured MiB | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows[1:]:
        measured = r["peak_bytes"] - fixed
        pred = estimate(r["config"], r["seq"], r["micro"], precision=r["precision"],
                        gradient_checkpointing=r["ckpt"], device="cpu",
                        attention="sdpa-packed" if r["packed"] else "sdpa").peak_allocated
        print(f"| {r['seq']} | {r['micro']} | {r['precision']} | {r['ckpt']} | {r['packed']} | "
              f"{pred / 2**20:.1f} | {measured / 2**20:.1f} | {pred / measured:.3f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases")
    parser.add_argument("--cpu", action="store_true", help="the CPU check (peak RSS)")
    args = parser.parse_args()
    if args.cpu:
        return cpu_main()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark compares against torch.cuda.max_memory_allocated)")
        return 0
    from memory_probe import measure

    from moai_llm.config import MoaiConfig
    from moai_llm.hardware.memory import estimate

    name = torch.cuda.get_device_name()
    total = torch.cuda.get_device_properties(0).total_memory
    print(f"# {name}, {total / 2**30:.1f} GiB, torch {torch.__version__}, loss chunk {CHUNK}")
    from moai_llm.modeling.attention import flash_attn_available

    flash = flash_attn_available()
    print(f"# flash-attn: {'installed' if flash else 'not installed (SDPA)'}")
    print("| model | seq | micro | precision | ckpt | packed | attention | predicted GiB | "
          "measured GiB | ratio | reserved pred | reserved meas | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    cases = CASES[:2] if args.quick else CASES
    worst = 0.0
    for preset, seq, micro, precision, ckpt, packed in cases:
        attention = ("flash" if flash and precision == "bf16" else "sdpa-math"
                     if precision == "fp32" else "sdpa-packed" if packed else "sdpa")
        est = estimate(MoaiConfig.from_preset(preset), seq, micro, precision=precision,
                       gradient_checkpointing=ckpt, loss_chunk_size=CHUNK, device="cuda",
                       attention=attention)
        row = f"| {preset} | {seq} | {micro} | {precision} | {ckpt} | {packed} | {attention}"
        if est.peak_reserved > 0.95 * total:
            print(f"{row} | skipped: predicted "
                  f"{est.peak_reserved / 2**30:.1f} GiB does not fit |")
            continue
        try:
            start = time.perf_counter()
            got = measure(preset, seq, micro, precision, ckpt, device="cuda", chunk=CHUNK,
                          packed=packed)
            allocated, reserved = got["peak_bytes"], got["reserved_bytes"]
            seconds = time.perf_counter() - start
        except torch.OutOfMemoryError:
            print(f"{row} | OOM (prediction "
                  f"{est.peak_allocated / 2**30:.1f} GiB was too low) |")
            gc.collect()
            torch.cuda.empty_cache()
            worst = max(worst, 1.0)
            continue
        ratio = est.peak_allocated / allocated
        worst = max(worst, abs(ratio - 1))
        reserved_pred = est.peak_reserved - est.cuda_context - est.nccl
        print(f"{row} | {est.peak_allocated / 2**30:.2f} | {allocated / 2**30:.2f} | {ratio:.3f} | "
              f"{reserved_pred / 2**30:.2f} | {reserved / 2**30:.2f} | {seconds:.1f} |", flush=True)
    print(f"# largest deviation of predicted/measured from 1: {worst:.3f} (goal <= 0.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
