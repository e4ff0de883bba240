"""Benchmark: moai's MoaiForCausalLM vs transformers' Qwen3ForCausalLM on the same weights.

Measures, in one run with interleaved repetitions (A, B, A, B, ...) so background load hits
both sides alike:
1. training step (forward + backward) with labels: each model's own loss path (moai's chunked
   loss from hidden states; transformers' full logits + cross-entropy);
2. forward + backward of the logits only (same external loss) to compare the decoder bodies;
3. greedy decoding with the KV cache (`generate`, tokens/s).

    python benchmarks/bench_model.py            # ~2 min on a 2-core CPU
    python benchmarks/bench_model.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F


def build_models(args):
    from transformers import AutoModelForCausalLM

    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    torch.manual_seed(0)
    cfg = MoaiConfig.from_preset(
        args.preset,
        vocab_size=args.vocab,
        loss_chunk_size=args.chunk,
        attn_implementation="sdpa",
    )
    moai = MoaiForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        moai.save_pretrained(tmp)
        ref = AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="sdpa")
    return cfg, moai, ref


def time_it(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is what the work itself costs and
    is far less disturbed by other jobs being scheduled on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_step(model, x, labels_loss: bool):
    model.zero_grad(set_to_none=True)
    if labels_loss:
        loss = model(x, labels=x).loss
    else:
        logits = model(x, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
    loss.backward()


def compare(name, fn_a, fn_b, reps: int) -> tuple[float, float, float]:
    """Interleaved repetitions of A and B: (median wall s of A, of B, median CPU-time ratio)."""
    fn_a(), fn_b()  # warm-up (allocator, kernels)
    a, b = [], []
    for _ in range(reps):
        a.append(time_it(fn_a))
        b.append(time_it(fn_b))
    ma, mb = statistics.median(w for w, _ in a), statistics.median(w for w, _ in b)
    ca, cb = statistics.median(c for _, c in a), statistics.median(c for _, c in b)
    cpu_ratio = ca / cb
    print(
        f"{name:<34} moai {ma * 1e3:7.1f} ms (CPU {ca * 1e3:7.1f})   "
        f"transformers {mb * 1e3:7.1f} ms (CPU {cb * 1e3:7.1f})   "
        f"wall ratio {ma / mb:5.2f}x   CPU-time ratio {cpu_ratio:5.2f}x"
    )
    return ma, mb, cpu_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024, help="moai loss_chunk_size")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    torch.set_num_threads(args.threads)

    cfg, moai, ref = build_models(args)
    print(
        f"preset={args.preset} vocab={cfg.vocab_size} hidden={cfg.hidden_size} "
        f"layers={cfg.num_hidden_layers} batch={args.batch}x{args.seq} threads={args.threads} "
        f"torch={torch.__version__} cpu={platform.processor() or platform.machine()}"
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=gen)

    moai.train(), ref.train()
    rows = []
    for labels_loss, title in (
        (True, "forward+backward with labels (each model's loss)"),
        (False, "forward+backward of logits (same external CE)"),
    ):
        timing = compare(
            "train step, " + ("labels (own loss)" if labels_loss else "logits + same CE"),
            lambda flag=labels_loss: train_step(moai, x, flag),
            lambda flag=labels_loss: train_step(ref, x, flag),
            reps,
        )
        rows.append((title, *timing))

    moai.eval(), ref.eval()
    prompt = x[:1, :16]
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    with torch.no_grad():
        same = torch.equal(moai.generate(prompt, **kw), ref.generate(prompt, **kw))
        ma, mb, cpu_ratio = compare(
            f"greedy decode {args.new_tokens} tok (KV cache)",
            lambda: moai.generate(prompt, **kw),
            lambda: ref.generate(prompt, **kw),
            max(3, reps // 3),
        )
    tps_a, tps_b = args.new_tokens / ma, args.new_tokens / mb
    print(f"decode tokens/s: moai {tps_a:.0f}  transformers {tps_b:.0f}  same tokens: {same}")

    print(
        "\n| measurement (median of interleaved runs) | moai | transformers | wall-time ratio | CPU-time ratio |"
    )
    print("|---|---|---|---|---|")
    for title, a, b, r in rows:
        print(f"| {title} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.2f}x | {r:.2f}x |")
    print(
        f"| greedy decode, KV cache, {args.new_tokens} new tokens | {tps_a:.0f} tok/s | "
        f"{tps_b:.0f} tok/s | {ma / mb:.2f}x | {cpu_ratio:.2f}x |"
    )


if __name__ == "__main__":
    main()
