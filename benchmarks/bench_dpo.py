"""`moai dpo` against TRL's DPOTrainer: peak memory and tokens/s on the same model, pairs and
settings, at vocabulary 8k and 152k; and QLoRA (`--lora-4bit`) against LoRA.

    OMP_NUM_THREADS=2 python benchmarks/bench_dpo.py [--steps 8] [--pairs-per-step 8] [--rounds 1]

Setup (CPU): a tiny Qwen3 decoder (hidden 128, 2 layers, tied embeddings, random weights)
whose vocabulary is 8,192 or 151,936 rows (an 8k tokenizer; the rows beyond it are what a
152k model's logits cost), the embedded finance preference pairs (train split, 508 pairs).
Both sides: sigmoid DPO, beta 0.1, AdamW lr 5e-6, fp32, the reference = the starting model,
answers up to 256 tokens per sequence, the same pairs per optimizer step (TRL: a batch of
pairs; moai: packed rows of 512 tokens, as many rows as hold that many pairs on average).

- moai: `moai dpo` in-process (launch_run); the reference's log-probs are computed once by the
  launcher before training (its time is reported apart, `reference_s`), then training.
- TRL 1.16: DPOTrainer with its defaults for the reference (a frozen copy of the model, run
  every step) and padding to the longest sequence in the batch.

Each run is its own process (peak memory = its max RSS, from getrusage); tokens/s = real
(non-padding) tokens of the pairs trained on, over the training loop's seconds (TRL:
`train_runtime`, tokens = its mean real tokens per pair x pairs trained; moai: its own count
and training window). moai and TRL alternate in one invocation so a
shared machine's load hits both alike. Then QLoRA vs LoRA (rank 16, all-linear) on a wider
decoder (hidden 512, 8 layers, vocabulary 8k), where the decoder's Linears dominate.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEQ, ANSWER = 512, 256


def _setup(root: Path) -> None:
    """An 8k tokenizer, the pairs file, and base models at vocab 8k / 152k (and a wider one)."""
    from moai_llm import corpora
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer import train_tokenizer
    from moai_llm.tokenizer.folder import put_tokenizer

    texts = [t for lang in ("ko", "en", "ja", "zh") for t in corpora.iter_texts(lang)]
    tok = train_tokenizer(texts, root / "tok", vocab_size=8000, show_progress=False)
    pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in corpora.finance_pairs("train")]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    shapes = {"v8k": (8192, 128, 2), "v152k": (151936, 128, 2), "wide": (8192, 512, 8)}
    for name, (vocab, hidden, layers) in shapes.items():
        config = MoaiConfig.from_preset("tiny", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        intermediate_size=3 * hidden, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=hidden // 4, max_position_embeddings=1024)
        import torch

        torch.manual_seed(0)
        MoaiForCausalLM(config).save_pretrained(root / name)
        put_tokenizer(str(tok), root / name)


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _moai(root: Path, model: str, steps: int, rows: int, out: Path, extra: dict) -> dict:
    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings

    set_quiet(True)
    flags = {"pretrained_model": str(root / model), "dataset": [str(root / "prepared")], "output_dir": str(out),
             "max_steps": steps, "micro_batch_size": rows, "gradient_accumulation_steps": 1, "nproc": 1,
             "learning_rate": 5e-6, "lr_scheduler": "constant", "warmup": 0, "precision": "fp32",
             "save_steps": 10**6, "logging_steps": 1, "tensorboard": False, "compile": False,
             "gradient_checkpointing": False, **extra}
    settings, sources = resolve_settings("dpo", flags=flags)
    started = time.perf_counter()
    record = prepare_run(settings, sources)
    reference_s = time.perf_counter() - started
    code, result = launch_run(record, show_progress=False)
    assert code == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    pairs = sum(1 for _ in metrics if "loss" in _)  # steps logged
    return {"tokens_per_s": result["tokens"] / result["seconds"], "seconds": result["seconds"],
            "tokens": result["tokens"], "reference_s": round(reference_s, 2), "steps": pairs,
            "step_s": result["seconds"] / steps, "loss": result["loss"]}


def _trl(root: Path, model: str, steps: int, pairs_per_step: int, out: Path) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(root / model)
    policy = AutoModelForCausalLM.from_pretrained(root / model, dtype=torch.float32)
    rows = [json.loads(x) for x in (root / "pairs.jsonl").read_text().splitlines()]
    data = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                        "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=pairs_per_step, max_steps=steps,
                     learning_rate=5e-6, lr_scheduler_type="constant", beta=0.1, max_length=ANSWER,
                     report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, bf16=False,
                     dataloader_num_workers=0, seed=0, disable_tqdm=True)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=data, processing_class=tok)
    mask_sum = pairs = 0
    for batch in trainer.get_train_dataloader():  # every pair once: real tokens per pair (2 sequences)
        mask_sum += int(batch["attention_mask"].sum())
        pairs += batch["attention_mask"].shape[0] // 2
    tokens = mask_sum / pairs * pairs_per_step * steps
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "step_s": seconds / steps,
            "loss": result.training_loss}


def _one(args: argparse.Namespace) -> None:
    """One run in this process; prints its figures and max RSS as JSON."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    root, out = Path(args.root), Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    if args.one == "trl":
        found = _trl(root, args.model, args.steps, args.pairs_per_step, out)
    else:
        extra = {"lora_rank": 16, **({"lora_4bit": True} if args.one == "qlora" else {})} \
            if args.one in ("lora", "qlora") else {}
        found = _moai(root, args.model, args.steps, args.rows, out, extra)
    print(json.dumps({"kind": args.one, "model": args.model, **found, "max_rss": _rss()}))


def _spawn(root: Path, kind: str, model: str, steps: int, pairs_per_step: int, rows: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--root", str(root), "--model", model, "--steps", str(steps),
           "--pairs-per-step", str(pairs_per_step), "--rows", str(rows)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{kind} {model} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-dpo-root-"))
    _setup(root)
    from moai_llm.data.prepare import prepare_dataset

    manifest = prepare_dataset([str(root / "pairs.jsonl")], str(root / "tok"), SEQ, str(root / "prepared"),
                               "preference")
    per_row = manifest["preference"]["num_pairs"] / manifest["num_rows"]
    rows = max(1, round(args.pairs_per_step / per_row))
    print(f"pairs per packed row of {SEQ}: {per_row:.2f} -> moai {rows} rows per step "
          f"(~{rows * per_row:.1f} pairs) vs TRL {args.pairs_per_step} pairs; load {os.getloadavg()}", flush=True)
    found: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for model in ("v8k", "v152k"):
            for kind in (("moai", "trl") if r % 2 == 0 else ("trl", "moai")):
                res = _spawn(root, kind, model, args.steps, args.pairs_per_step, rows)
                found.setdefault((kind, model), []).append(res)
                print(json.dumps(res), flush=True)
        for kind in ("lora", "qlora") if r % 2 == 0 else ("qlora", "lora"):
            res = _spawn(root, kind, "wide", args.steps, args.pairs_per_step, rows)
            found.setdefault((kind, "wide"), []).append(res)
            print(json.dumps(res), flush=True)

    def med(kind, model, key):
        return statistics.median(x[key] for x in found[(kind, model)])

    print(f"\nload average after: {os.getloadavg()}")
    for model in ("v8k", "v152k"):
        m_rss, t_rss = med("moai", model, "max_rss"), med("trl", model, "max_rss")
        m_tps, t_tps = med("moai", model, "tokens_per_s"), med("trl", model, "tokens_per_s")
        print(f"{model}: peak RSS moai {m_rss / 2**20:.0f} MiB vs TRL {t_rss / 2**20:.0f} MiB "
              f"({m_rss / t_rss:.2f}x); tokens/s moai {m_tps:,.0f} vs TRL {t_tps:,.0f} ({m_tps / t_tps:.2f}x); "
              f"moai reference scoring {med('moai', model, 'reference_s'):.1f} s once")
    l_rss, q_rss = med("lora", "wide", "max_rss"), med("qlora", "wide", "max_rss")
    l_s, q_s = med("lora", "wide", "step_s"), med("qlora", "wide", "step_s")
    print(f"wide (hidden 512, 8 layers): peak RSS QLoRA {q_rss / 2**20:.0f} MiB vs LoRA {l_rss / 2**20:.0f} MiB "
          f"({q_rss / l_rss:.2f}x); step {q_s:.3f} s vs {l_s:.3f} s ({q_s / l_s:.2f}x)")


if __name__ == "__main__":
    main()
