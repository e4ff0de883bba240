"""LoRA against full fine-tuning of the same model: tokens/s and peak memory, measured; and the
micro batch the planner gives each on recorded GPUs.

    python benchmarks/bench_lora.py [--rounds 3] [--steps 30] [--model small]

Measured (CPU, this machine): `moai pretrain --pretrained-model BASE` on packed rows of 256
tokens (the embedded ko/en corpora, an 8k tokenizer), micro batch 8, fp32, once training every
weight and once with `--lora-rank 16` (all-linear). Each run is its own process (peak memory =
its max RSS); full and LoRA runs alternate round by round in ONE invocation (order swapped
every round), so a shared machine's load hits both alike. tokens/s = the run's own figure
(tokens over training seconds). Reported: medians and the LoRA/full ratios.

Planned (not measured: recorded facts, presets/hardware/): the plan's micro batch, checkpointing
and predicted peak for qwen3-0.6b and qwen3-4b, full and LoRA rank 16, at seq 2048 on
1xRTX4090-24GB and 1xH200-141GB (moai_llm.training.launcher.runner.plan_for: the same plan `moai doctor`
shows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # embedded_rows


def _setup(root: Path, model: str) -> None:
    """Tokenizer, packed rows and a base model folder (random weights, the `model` preset)."""
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer.folder import put_tokenizer

    from embedded_rows import embedded_rows

    tok, _ = embedded_rows(root, vocab_size=8000, seq_len=256)
    config = MoaiConfig.from_preset(model, vocab_size=8000)
    MoaiForCausalLM(config).save_pretrained(root / "base")
    put_tokenizer(str(tok), root / "base")


def _one(root: Path, kind: str, steps: int, out: Path) -> None:
    """One run in this process; prints its tokens/s and max RSS as JSON."""
    import torch

    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    set_quiet(True)
    flags = {"pretrained_model": str(root / "base"), "dataset": [str(root / "data")], "output_dir": str(out),
             "max_steps": steps, "micro_batch_size": 8, "gradient_accumulation_steps": 1, "nproc": 1,
             "save_steps": 10**6, "logging_steps": steps, "tensorboard": False, "compile": False}
    if kind == "lora":
        flags["lora_rank"] = 16
    settings, sources = resolve_settings("pretrain", flags=flags)
    code, result = launch_run(prepare_run(settings, sources), show_progress=False)
    assert code == 0
    print(json.dumps({"kind": kind, "tokens_per_s": result["tokens"] / result["seconds"],
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _planned() -> list[dict]:
    from moai_llm.config import MoaiConfig
    from moai_llm.hardware.simulate import simulate
    from moai_llm.training.launcher.runner import plan_for
    from moai_llm.training.settings import resolve_settings

    rows = []
    for hardware in ("1xRTX4090-24GB", "1xH200-141GB"):
        for model in ("qwen3-0.6b", "qwen3-4b"):
            for lora in (None, 16):
                flags = {"model": model, "simulate": hardware, "seq_len": 2048}
                if lora:
                    flags["lora_rank"] = lora
                s, _ = resolve_settings("pretrain", flags=flags)
                plan = plan_for(s, MoaiConfig.from_preset(model), simulate(hardware))
                fits = not any("does not fit" in w for w in plan.warnings)
                rows.append({"hardware": hardware, "model": model, "lora": lora or "-",
                             "micro_batch": plan.micro_batch_size if fits else 0,
                             "checkpointing": plan.gradient_checkpointing,
                             "peak_gib": round((plan.predicted_peak_bytes or 0) / 2**30, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default="small")
    parser.add_argument("--one", nargs=3, metavar=("ROOT", "KIND", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(Path(args.one[0]), args.one[1], args.steps, Path(args.one[2]))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    _setup(root, args.model)
    found: dict[str, list[dict]] = {"full": [], "lora": []}
    for r in range(args.rounds):
        for kind in (("full", "lora") if r % 2 == 0 else ("lora", "full")):
            done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", str(root), kind,
                                   str(root / f"run-{kind}-{r}")], capture_output=True, text=True, check=True)
            found[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(kind, found[kind][-1], flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("tokens_per_s", "max_rss")} for k, v in found.items()}
    print(f"\nmodel {args.model} (vocab 8000), rows of 256, micro batch 8, fp32, {args.steps} steps, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print("| run | tokens/s (median) | peak RSS (median) |\n|---|---|---|")
    for kind, m in med.items():
        print(f"| {kind} | {m['tokens_per_s']:,.0f} | {m['max_rss'] / 2**20:,.0f} MiB |")
    print(f"LoRA/full: tokens/s {med['lora']['tokens_per_s'] / med['full']['tokens_per_s']:.2f}x, "
          f"peak RSS {med['lora']['max_rss'] / med['full']['max_rss']:.2f}x")
    print("\nplanned (recorded facts, seq 2048):\n| hardware | model | LoRA rank | micro batch | checkpointing | "
          "predicted peak |\n|---|---|---|---|---|---|")
    for row in _planned():
        print(f"| {row['hardware']} | {row['model']} | {row['lora']} | {row['micro_batch'] or 'does not fit'} | "
              f"{row['checkpointing']} | {row['peak_gib']} GiB |")


if __name__ == "__main__":
    main()
