"""Decode speed and time to first token: `moai chat`'s generation path vs transformers' `generate`
with its `TextIteratorStreamer`, on the same random Qwen3 model folders, in one run.

    python benchmarks/bench_chat.py            # 2 models (hidden 256/4 layers and 512/8 layers,
                                               # vocab 8k), 5 rounds x 128 new tokens
    python benchmarks/bench_chat.py --quick    # the small model only, 2 rounds x 64 tokens

Both sides load the SAME folder with `moai_llm.inference.load_for_chat` (moai's model class),
decode greedily from the same chat-template prompt, with stop tokens off so both produce
exactly `--new-tokens` tokens (the script checks the token ids are identical), and stream text:
moai through `stream_generate` (what `moai chat` prints), transformers through `generate` in a
thread feeding a `TextIteratorStreamer` (its documented streaming recipe). Time to first token
is from the call to the first generated token (the streamer's second `put`, the first being the
prompt); decode tokens/s counts the tokens after the first over the time after the first.
Rounds alternate the order of the sides because the machine is shared; the table shows
medians, and the speed-ups are medians of the per-round ratios (moai vs stock transformers).

The tokenizer (vocab 8k) is trained on `../shared/corpora` (override with MOAI_SHARED_CORPORA);
without it the script says so and uses moai's built-in sample sentences (a smaller vocab).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # random_models: the same random folders the tests build


def corpora_dir() -> Path:
    return Path(os.environ.get("MOAI_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))


def tokenizer_texts(limit_bytes: int = 8 << 20) -> list[str] | None:
    folder = corpora_dir()
    reviews, play = folder / "ko_movie_reviews.jsonl", folder / "en_shakespeare.txt"
    if not (reviews.is_file() and play.is_file()):
        return None
    texts, size = [], 0
    with reviews.open(encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode())
            if size > limit_bytes:
                break
    texts += play.read_text(encoding="utf-8").split("\n\n")
    return texts


def run_moai(model, tokenizer, ids, new_tokens):
    from moai_llm.inference import GenerationStats, SamplingParams, stream_generate

    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    stats = GenerationStats()
    text = "".join(stream_generate(model, tokenizer, ids, params, stop_ids=[], stats=stats))
    return {"ttft": stats.ttft_s, "tok_s": stats.tokens_per_s, "total": stats.total_s,
            "tokens": stats.tokens, "text": text}


def run_transformers(model, tokenizer, ids, new_tokens):
    import torch
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.put_times: list[float] = []
            self.count = 0

        def put(self, value):
            self.put_times.append(time.perf_counter())
            if len(self.put_times) > 1:
                self.count += value.numel()
            super().put(value)

    streamer = TimedStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = torch.tensor([ids], device=model.device)
    kwargs = dict(input_ids=inputs, attention_mask=torch.ones_like(inputs), streamer=streamer,
                  do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  eos_token_id=None, pad_token_id=tokenizer.pad_token_id, repetition_penalty=1.0)
    start = time.perf_counter()
    thread = threading.Thread(target=model.generate, kwargs=kwargs)
    thread.start()
    text = "".join(streamer)
    end = time.perf_counter()
    thread.join()
    first = streamer.put_times[1]
    return {"ttft": first - start, "tok_s": (streamer.count - 1) / (end - first), "total": end - start,
            "tokens": streamer.count, "text": text}


def bench_model(name, folder, rounds, new_tokens, prompt_words):
    import torch
    from transformers import AutoModelForCausalLM

    from moai_llm.inference import load_for_chat

    model, tokenizer, info = load_for_chat(folder)
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=model.dtype).to(model.device).eval()
    for m in (model, stock):
        m.generation_config.eos_token_id = None  # stop tokens off: every side makes new_tokens tokens
    message = " ".join(["금리가 오르면 은행 예금 이자는 어떻게 되나요? Please explain."] * prompt_words)
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sides = {  # name: (function, model)
        "moai": (run_moai, model),
        "transformers": (run_transformers, stock),
        "generate_on_moai": (run_transformers, model),
    }
    runs = {side: [] for side in sides}
    with torch.inference_mode():
        for fn, m in sides.values():  # warm-up (allocator, first-call paths), not measured
            fn(m, tokenizer, ids, 8)
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                fn, m = sides[side]
                runs[side].append(fn(m, tokenizer, ids, new_tokens))
    same = len({runs[side][0]["text"] for side in sides}) == 1
    med = {s: {k: statistics.median(run[k] for run in runs[s]) for k in ("ttft", "tok_s", "total")}
           for s in runs}
    # ratios within each round (the two sides ran seconds apart, under the same load), then median
    med["ratio_tok_s"] = statistics.median(
        a["tok_s"] / b["tok_s"] for a, b in zip(runs["moai"], runs["transformers"], strict=True))
    med["ratio_ttft"] = statistics.median(
        b["ttft"] / a["ttft"] for a, b in zip(runs["moai"], runs["transformers"], strict=True))
    return {"name": name, "parameters": info["parameters"], "prompt_tokens": len(ids),
            "new_tokens": runs["moai"][0]["tokens"], "same_text": same, **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model only, 2 rounds x 64 tokens")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    new_tokens = args.new_tokens or (64 if args.quick else 128)

    # transformers' streamer recipe runs generate in a second thread; OpenMP thread counts are
    # per thread, so the environment variable (read at torch import) keeps both sides equal.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from transformers.utils import logging as hf_logging

    from moai_llm.tokenizer import train_tokenizer

    from random_models import write_random_model

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    models = [("hidden 256, 4 layers", dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2))]
    if not args.quick:
        models.append(("hidden 512, 8 layers", dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4)))
    with tempfile.TemporaryDirectory() as tmp:
        texts = tokenizer_texts()
        if texts is None:
            print(f"note: {corpora_dir()} not found; the tokenizer is trained on built-in sample sentences",
                  file=sys.stderr)
            from random_models import SAMPLE_TEXTS

            texts = SAMPLE_TEXTS * 50
        tok_dir = train_tokenizer(texts, Path(tmp) / "tokenizer", vocab_size=8000)
        results = []
        for name, shape in models:
            folder = write_random_model(Path(tmp) / name.replace(" ", "_").replace(",", ""), tok_dir,
                                        context_length=4096, **shape)
            results.append(bench_model(name, folder, rounds, new_tokens, prompt_words=8))
            print(f"done: {name}", file=sys.stderr)

    print(f"\n{rounds} rounds (medians), {new_tokens} new tokens, greedy, torch threads {args.threads}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| model | params | prompt tok | moai tok/s | transformers tok/s | generate on moai model tok/s "
          "| decode speed-up | moai TTFT ms | transformers TTFT ms | generate on moai model TTFT ms "
          "| TTFT speed-up | same text |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        m, t, g = r["moai"], r["transformers"], r["generate_on_moai"]
        print(f"| {r['name']} | {r['parameters'] / 1e6:.1f}M | {r['prompt_tokens']} | {m['tok_s']:.1f} | "
              f"{t['tok_s']:.1f} | {g['tok_s']:.1f} | {r['ratio_tok_s']:.2f}× | {m['ttft'] * 1e3:.1f} | "
              f"{t['ttft'] * 1e3:.1f} | {g['ttft'] * 1e3:.1f} | {r['ratio_ttft']:.2f}× | {'yes' if r['same_text'] else 'NO'} |")


if __name__ == "__main__":
    main()
