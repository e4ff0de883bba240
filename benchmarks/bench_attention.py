"""Benchmark: attention over packed rows and compiled decoder blocks, on the CPU.

    python benchmarks/bench_attention.py --quick    # 2 rounds (~15 min on a 2-core CPU)
    python benchmarks/bench_attention.py            # 3 rounds

Rows of 2,048 tokens packed with short (~15 tokens), medium (~200) and long (~1,500)
documents; models: the `small` preset (4 x 256, vocab 8k) and a ~50M Qwen3 (10 x 512, vocab
32k). One run, variants interleaved round by round (A, B, C, A, B, C, ...), each figure the
median over rounds; ratios are against the baseline measured in the same rounds.

Training step (forward + backward with labels, no optimizer):
  sdpa-dense            baseline: SDPA with a dense [T, T] block-diagonal mask
  sdpa-dense+compile    the same with compile_blocks(model) (torch.compile per decoder block)
  sdpa-banded           SDPA over tiles of the band near the diagonal (moai's SDPA packed path)
  sdpa-banded+compile   the same, compiled blocks
  (flex: no CPU backward in torch 2.13, so there is no flex training step on the CPU)
Forward only (no gradients, eval, loss from labels; what evaluation runs):
  fwd sdpa-dense (baseline), fwd sdpa-banded, fwd flex (compiled flex kernel),
  fwd flex+compile (compiled blocks around it)
Kernel section: one layer's attention alone (B 1, 4 query / 2 KV heads, head_dim 64).

Time: wall and CPU time of this process per step (1 thread by default; CPU time is the steadier
figure on a shared machine, ratios use it). Memory: peak resident set size (RSS, sampled every
0.5 ms from /proc/self/statm) during one step minus RSS just before it, with glibc's mmap
threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_; the script restarts itself to set it) so
freed tensors leave the RSS instead of being kept in the heap. Compiled variants are warmed up
(compiled) before the rounds; the compile time is reported separately.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager

import torch

SEQ = 2048
DOCS = {"short": 15, "medium": 200, "long": 1500}
MODELS = {
    "small": dict(preset="small", max_position_embeddings=SEQ),
    "50m": dict(vocab_size=32768, hidden_size=512, intermediate_size=1536, num_hidden_layers=10,
                num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                max_position_embeddings=SEQ, rope_theta=10000.0, tie_word_embeddings=True),
}  # fmt: skip
TRAIN = ["sdpa-dense", "sdpa-dense+compile", "sdpa-banded", "sdpa-banded+compile"]
FORWARD = ["fwd sdpa-dense", "fwd sdpa-banded", "fwd flex", "fwd flex+compile"]


def positions_for(mean: int, rows: int, seed: int) -> torch.Tensor:
    """position_ids of `rows` rows of SEQ tokens, documents of mean ± a third tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        lengths, total = [], 0
        while total < SEQ:
            n = int(torch.randint(mean - mean // 3, mean + mean // 3 + 1, (1,), generator=gen))
            n = min(max(n, 1), SEQ - total)
            lengths.append(n)
            total += n
        out.append(torch.cat([torch.arange(n) for n in lengths]))
    return torch.stack(out)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss(result: dict):
    """result["peak"] = highest RSS sampled during the block minus RSS at its start."""
    base, peak, stop = rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(peak[0], rss_bytes()) - base


class Variants:
    """Switches one model between the variants (backend, band, compiled blocks, gradients)."""

    def __init__(self, model, x, positions):
        from moai_llm.modeling import compile_blocks

        self.model, self.x, self.positions = model, x, positions
        self.layers = list(model.model.layers)
        compile_blocks(model, dynamic=False)  # one static graph per shape, no dynamic fallback
        self.compiled = self.layers[0].compiled_block

    def run(self, name: str) -> None:
        from moai_llm.modeling import banded

        forward_only = name.startswith("fwd ")
        kind = name.removeprefix("fwd ")
        self.model.config._attn_implementation = "flex_attention" if "flex" in kind else "sdpa"
        banded.enabled = "banded" in kind
        for layer in self.layers:
            layer.compiled_block = self.compiled if kind.endswith("+compile") else None
        if forward_only:
            self.model.eval()
            with torch.no_grad():  # loss from hidden states in chunks, as evaluation runs it
                self.model(self.x, position_ids=self.positions, labels=self.x)
        else:
            self.model.train()
            self.model.zero_grad(set_to_none=True)
            self.model(self.x, position_ids=self.positions, labels=self.x).loss.backward()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(variants: Variants, names: list[str], rounds: int) -> dict[str, dict]:
    stats = {n: {"wall": [], "cpu": []} for n in names}
    for name in names:  # warm-up: compiles, allocator, first-touch
        stats[name]["first_s"] = timed(lambda n=name: variants.run(n))[0]
    for _ in range(rounds):
        for name in names:
            wall, cpu = timed(lambda n=name: variants.run(n))
            stats[name]["wall"].append(wall)
            stats[name]["cpu"].append(cpu)
    for name in names:
        memory: dict = {}
        with peak_rss(memory):
            variants.run(name)
        stats[name]["rss"] = memory["peak"]
        stats[name]["wall_s"] = statistics.median(stats[name]["wall"])
        stats[name]["cpu_s"] = statistics.median(stats[name]["cpu"])
    return stats


def kernel_section(rounds: int) -> list[str]:
    """One layer's attention, forward + backward (dense, banded) and forward only (+ flex)."""
    lines = ["| documents | dense mask fwd+bwd | banded fwd+bwd (tile/window) | dense mask fwd | "
             "banded fwd | flex fwd (compiled) |", "|---|---|---|---|---|---|"]
    gen = torch.Generator().manual_seed(0)
    for label, mean in DOCS.items():
        lines.append(kernel_row(label, mean, rounds, gen))
        print(lines[-1], flush=True)
    return lines


def kernel_row(label: str, mean: int, rounds: int, gen: torch.Generator) -> str:
    import torch.nn.functional as F

    from moai_llm.modeling.attention import AttentionPlan
    from moai_llm.modeling.banded import Band, banded_sdpa
    from moai_llm.modeling.flex import document_block_mask, flex_attention

    positions = positions_for(mean, 1, seed=mean)
    q = torch.randn(1, 4, SEQ, 64, generator=gen, requires_grad=True)
    k = torch.randn(1, 2, SEQ, 64, generator=gen, requires_grad=True)
    v = torch.randn(1, 2, SEQ, 64, generator=gen, requires_grad=True)
    dense = AttentionPlan.build("eager", positions, None, q_len=SEQ, past_len=0,
                                dtype=torch.float32).mask  # fmt: skip
    band = Band.build(positions == 0)
    block_mask = document_block_mask(positions)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)

    def dense_fwd():
        return F.scaled_dot_product_attention(q, kk, vv, attn_mask=dense)

    fns = {
        "dense": lambda: dense_fwd().sum().backward(),
        "dense fwd": lambda: dense_fwd().detach(),
        "flex fwd": lambda: flex_attention(q.detach(), k.detach(), v.detach(), block_mask, 0.125),
    }
    if band is not None:
        fns["banded"] = lambda: banded_sdpa(q, k, v, band, 0.125, 0.0).sum().backward()
        fns["banded fwd"] = lambda: banded_sdpa(q, k, v, band, 0.125, 0.0).detach()
    times = {n: [] for n in fns}
    for fn in fns.values():
        fn()
    for _ in range(max(3, rounds)):
        for name, fn in fns.items():
            times[name].append(timed(fn)[1])
    ms = {n: statistics.median(t) * 1e3 for n, t in times.items()}

    def cell(name: str, base: str) -> str:
        if name not in ms:
            return "dense mask used (band too wide)"
        return f"{ms[name]:.0f} ms ({ms[name] / ms[base]:.2f}x)"

    shape = f" ({band.tile}/{band.window})" if band is not None else ""
    return (f"| {label} (~{mean}) | {ms['dense']:.0f} ms | {cell('banded', 'dense')}{shape} "
            f"| {ms['dense fwd']:.0f} ms | {cell('banded fwd', 'dense fwd')} | "
            f"{cell('flex fwd', 'dense fwd')} |")


def model_section(name: str, rounds: int, batch: int) -> list[str]:
    from moai_llm.config import MoaiConfig, parameter_count
    from moai_llm.modeling import MoaiForCausalLM

    spec = dict(MODELS[name])
    preset = spec.pop("preset", None)
    cfg = MoaiConfig.from_preset(preset, **spec) if preset else MoaiConfig(**spec)
    torch.manual_seed(0)
    model = MoaiForCausalLM(cfg)
    torch._dynamo.reset()
    lines = []
    header = (f"\n### {name}: {parameter_count(cfg) / 1e6:.1f}M parameters, {cfg.num_hidden_layers} "
              f"layers x {cfg.hidden_size}, heads {cfg.num_attention_heads}/{cfg.num_key_value_heads}, "
              f"vocab {cfg.vocab_size}; {batch} x {SEQ} tokens per step\n")
    lines += [header, "| documents | variant | wall ms | CPU ms | CPU-time ratio vs baseline | "
              "peak RSS of the step | first step (incl. compile) |", "|---|---|---|---|---|---|---|"]
    print(header, flush=True)
    for label, mean in DOCS.items():
        positions = positions_for(mean, batch, seed=mean)
        x = torch.randint(0, cfg.vocab_size, (batch, SEQ), generator=torch.Generator().manual_seed(1))
        variants = Variants(model, x, positions)
        for names in (TRAIN, FORWARD):
            stats = measure(variants, names, rounds)
            base = stats[names[0]]["cpu_s"]
            for n in names:
                s = stats[n]
                lines.append(
                    f"| {label} (~{mean}) | {n} | {s['wall_s'] * 1e3:.0f} | {s['cpu_s'] * 1e3:.0f} | "
                    f"{s['cpu_s'] / base:.2f}x | {s['rss'] / 2**20:.0f} MiB | {s['first_s']:.1f} s |"
                )
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 3")
    parser.add_argument("--models", default="small,50m", help="comma-separated: small, 50m")
    parser.add_argument("--batch", type=int, default=1, help="rows of 2048 tokens per step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-kernel", action="store_true", help="skip the one-layer section")
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by glibc at process start
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # every variant and shape keeps its own graph
    rounds = 2 if args.quick else 3
    start = time.time()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, threads {args.threads}, rounds {rounds}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    lines = [] if args.no_kernel else kernel_section(rounds)
    for name in args.models.split(","):
        lines += model_section(name.strip(), rounds, args.batch)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (1 min), "
          f"{os.getloadavg()[1]:.1f} (5 min); {time.time() - start:.0f} s in all\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
