"""Training throughput: `moai pretrain` against transformers.Trainer and a bare loop.

    python benchmarks/bench_train.py [--quick] [--only moai,bare] [--rounds N]

Model: a Qwen3 (MoaiForCausalLM, the same model in every contender) with hidden 256,
4 layers, vocabulary 32k, trained on Korean movie reviews (../shared/corpora, or
$MOAI_SHARED_CORPORA). Contenders, interleaved round by round in ONE run (the machine is
shared, so A/B order alternates):

  moai      `moai pretrain`'s code path (prepare_run + launch_run, one process) on packed rows
  padded    transformers.Trainer, one review per row, DataCollatorForLanguageModeling padding
  grouped   the same with train_sampling_strategy="group_by_length" (the seed's setup)
  packed    transformers.Trainer on moai's packed rows
  bare      a bare forward/backward/AdamW-step loop on the packed rows
  *-stock   padded/grouped/packed with transformers' own Qwen3ForCausalLM (full logits), as the
            seed ran it; the others use moai's model (loss from hidden states in chunks)

Figures: real (non-padding) tokens per second of wall time over the steps after warm-up, and
per second of this process's CPU time (less sensitive to other jobs on a shared machine).
Prints a table and the ratios the issue sets as goals (moai ≥ 2× padded, ≥ 1.0× the best of
the others).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEQ = 256
PACKED_BATCH = 8       # 8 × 256 = 2,048 tokens per step
PADDED_BATCH = 32      # reviews per step (about the same real tokens as the packed batch)
LR = 1e-3


def corpora_dir() -> Path | None:
    path = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
    return path if (path / "ko_movie_reviews.jsonl").is_file() else None


def setup(work: Path, n_reviews: int):
    from moai_llm.data import prepare_dataset
    from moai_llm.tokenizer import load_tokenizer, train_tokenizer

    src = corpora_dir()
    reviews = []
    with open(src / "ko_movie_reviews.jsonl", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line).get("text", "").strip()
            if text:
                reviews.append(text)
            if len(reviews) >= n_reviews:
                break
    data_file = work / "reviews.jsonl"
    with open(data_file, "w", encoding="utf-8") as fh:
        for r in reviews:
            fh.write(json.dumps({"text": r}, ensure_ascii=False) + "\n")
    tok_dir = train_tokenizer(reviews, work / "tok", vocab_size=32000)
    prepare_dataset([str(data_file)], tok_dir, SEQ, work / "packed")
    return load_tokenizer(tok_dir), tok_dir, reviews


def model_config(tokenizer) -> dict:
    """One model for every contender: the vocabulary is what `moai pretrain` gives a new model
    (the tokenizer's size rounded up to a multiple of 64: a GEMM dimension the BLAS handles
    well; the trained 32k tokenizer holds 31,457 tokens, and an odd 31,457-row LM head made the
    step ~10% slower on this CPU)."""
    return dict(vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def new_model(tokenizer, stock: bool = False):
    """moai's model, or (stock=True) transformers' own Qwen3ForCausalLM with the same config,
    which computes full logits (the seed's setup)."""
    import torch

    torch.manual_seed(0)
    if stock:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(**model_config(tokenizer)))
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    return MoaiForCausalLM(MoaiConfig(**model_config(tokenizer)))


def run_moai(work: Path, tok_dir: Path, warm: int, steps: int, rnd: int) -> float:
    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings
    from moai_llm.training.worker.metrics import read_metrics

    out = work / f"moai-{rnd}"
    model_file = work / "model.yaml"
    import yaml

    from moai_llm.tokenizer import load_tokenizer

    model_file.write_text(yaml.safe_dump(model_config(load_tokenizer(tok_dir))))
    s, sources = resolve_settings("pretrain", None, dict(
        model_config=str(model_file), tokenizer=str(tok_dir), dataset=[str(work / "packed")],
        output_dir=str(out), max_steps=warm + steps, micro_batch_size=PACKED_BATCH,
        gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler="constant", warmup=0,
        save_steps=10**9, logging_steps=1, nproc=1, tensorboard=False, precision="fp32"))
    set_quiet(True)
    record = prepare_run(s, sources, argv=["bench"])
    launch_run(record, show_progress=False)
    set_quiet(False)
    rec = {r["step"]: r for r in read_metrics(out) if "loss" in r}
    a, b = rec[warm], rec[warm + steps]
    n = b["tokens"] - a["tokens"]
    return n / (b["elapsed_s"] - a["elapsed_s"]), n / (b["cpu_s"] - a["cpu_s"])


def _trainer_run(model, dataset, collator, warm: int, steps: int, batch: int, pad_id: int, **args) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    tokens: list[int] = []
    marks: dict[int, tuple[float, float]] = {}

    def counting(features):
        out = collator(features)
        tokens.append(int((out["input_ids"] != pad_id).sum()))
        return out

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            marks[state.global_step] = (time.perf_counter(), time.process_time())

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, max_steps=warm + steps, learning_rate=LR,
            lr_scheduler_type="constant", optim="adamw_torch_fused", logging_steps=10**6,
            save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=True, seed=0, **args)
        Trainer(model=model, args=targs, train_dataset=dataset, data_collator=counting,
                callbacks=[Clock()]).train()
    n = sum(tokens[warm:warm + steps])
    (w0, c0), (w1, c1) = marks[warm], marks[warm + steps]
    return n / (w1 - w0), n / (c1 - c0)


def run_padded(reviews_ds, tokenizer, warm, steps, grouped: bool, stock: bool = False) -> float:
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    extra = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    return _trainer_run(new_model(tokenizer, stock), reviews_ds, collator, warm, steps, PADDED_BATCH,
                        tokenizer.pad_token_id, **extra)


def run_packed_trainer(packed_ds, tokenizer, warm, steps, stock: bool = False) -> float:
    from transformers import default_data_collator

    return _trainer_run(new_model(tokenizer, stock), packed_ds, default_data_collator, warm, steps,
                        PACKED_BATCH, tokenizer.pad_token_id)


def run_bare(packed_ds, tokenizer, warm, steps) -> float:
    import torch

    model = new_model(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(packed_ds), generator=g)
    t0 = c0 = 0.0
    real = 0
    for step in range(warm + steps):
        idx = order[(step * PACKED_BATCH) % len(order):][:PACKED_BATCH].tolist()
        b = packed_ds[idx]
        ids, pos, labels = (torch.as_tensor(b[c], dtype=torch.long) for c in ("input_ids", "position_ids", "labels"))
        loss = model(input_ids=ids, position_ids=pos, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == warm - 1:
            t0, c0 = time.perf_counter(), time.process_time()
        elif step >= warm:
            real += int((ids != tokenizer.pad_token_id).sum())
    return real / (time.perf_counter() - t0), real / (time.process_time() - c0)


RATIO_NEEDS = ("moai", "padded", "grouped", "packed", "bare", "padded-stock", "grouped-stock",
               "packed-stock")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer reviews, steps and rounds")
    parser.add_argument("--only", help="comma-separated contenders (default: all), e.g. moai,bare")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3, --quick: 1)")
    parser.add_argument("--steps", type=int, help="measured steps per run (default: 8, --quick: 6)")
    args = parser.parse_args()
    if corpora_dir() is None:
        print("skipped: Korean reviews not found (../shared/corpora/ko_movie_reviews.jsonl or "
              "$MOAI_SHARED_CORPORA)")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch

    from moai_llm.data import load_prepared

    datasets.disable_progress_bars()
    n_reviews, warm, steps, rounds = (20000, 2, 6, 1) if args.quick else (60000, 3, 8, 3)
    rounds, steps = args.rounds or rounds, args.steps or steps
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    tokenizer, tok_dir, reviews = setup(work, n_reviews)
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"][:SEQ - 1] + [tokenizer.eos_token_id]
           for r in reviews]
    reviews_ds = datasets.Dataset.from_dict({"input_ids": ids})
    packed_ds = load_prepared(work / "packed").with_format(None)
    contenders = {
        "moai": lambda r: run_moai(work, tok_dir, warm, steps, r),
        "padded": lambda r: run_padded(reviews_ds, tokenizer, warm, steps, grouped=False),
        "grouped": lambda r: run_padded(reviews_ds, tokenizer, warm, steps, grouped=True),
        "packed": lambda r: run_packed_trainer(packed_ds, tokenizer, warm, steps),
        "bare": lambda r: run_bare(packed_ds, tokenizer, warm, steps),
        "padded-stock": lambda r: run_padded(reviews_ds, tokenizer, warm, steps, grouped=False, stock=True),
        "grouped-stock": lambda r: run_padded(reviews_ds, tokenizer, warm, steps, grouped=True, stock=True),
        "packed-stock": lambda r: run_packed_trainer(packed_ds, tokenizer, warm, steps, stock=True),
    }
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only.split(",")}
    results: dict[str, list[float]] = {k: [] for k in contenders}
    per_cpu: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for rnd in range(rounds):
        for name in (names if rnd % 2 == 0 else names[::-1]):
            value, cpu = contenders[name](rnd)
            results[name].append(value)
            per_cpu[name].append(cpu)
            print(f"round {rnd + 1} {name:8s} {value:8.0f} real tokens/s  {cpu:8.0f} per CPU-second",
                  flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    med_cpu = {k: statistics.median(v) for k, v in per_cpu.items()}
    real_frac = sum(len(x) for x in ids) / sum(max(len(x) for x in ids[i:i + PADDED_BATCH])
                                               * len(ids[i:i + PADDED_BATCH]) for i in range(0, len(ids), PADDED_BATCH))
    print(f"\nthreads {torch.get_num_threads()}, reviews {len(reviews)}, seq {SEQ}, packed batch "
          f"{PACKED_BATCH}, padded batch {PADDED_BATCH} (real share of padded tokens in sequential "
          f"batches ≈ {real_frac:.0%}), warm-up {warm}, measured {steps} steps × {rounds} round(s)")
    print(f"load average (1 min): {os.getloadavg()[0]:.1f} at the end")
    print("| contender | real tokens/s (median) | moai ÷ it | real tokens per CPU-second | moai ÷ it |")
    print("|---|---|---|---|---|")
    for k in names:
        print(f"| {k} | {med[k]:,.0f} | {med['moai'] / med[k]:.3f}× | {med_cpu[k]:,.0f} | "
              f"{med_cpu['moai'] / med_cpu[k]:.3f}× |")
    if set(names) != set(RATIO_NEEDS):
        return 0
    for label, m in (("wall", med), ("CPU", med_cpu)):
        for suffix in ("", "-stock"):
            best_other = max(m[k] for k in ("grouped" + suffix, "packed" + suffix, "bare"))
            print(f"[{label}] moai ÷ padded{suffix} Trainer = {m['moai'] / m['padded' + suffix]:.2f}× "
                  f"(goal ≥ 2); moai ÷ best of grouped{suffix}/packed{suffix}/bare = "
                  f"{m['moai'] / best_other:.2f}× (goal ≥ 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
