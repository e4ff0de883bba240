"""Claim: growing a model's vocabulary with `--new-embeddings pieces` starts the grown model
where the base model was; the mean-of-all-rows start does not.

Measured: bits per byte (UTF-8 bytes, so different tokenizers compare) on held-out domain text
(the embedded finance Q&A) and held-out general text (the ko/en/ja/zh corpora), before any
training with the new tokenizer, for

- base: the base model with its base tokenizer (the reference);
- pieces: the grown model, each new token's rows = mean of its base pieces' rows;
- mean: the grown model, each new row = mean of all old rows (the previous behaviour).

The base model is a small Qwen3 (MoaiForCausalLM) trained here on the embedded corpora (general
text plus the finance Q&A train split) so that its embeddings mean something; the new tokenizer
is the base one extended with finance vocabulary by `moai tokenizer extend`
(`extend_tokenizer`). Everything runs on CPU in one process; ratios are to the base figure.

    python benchmarks/bench_vocab.py                 # the RESULTS.md figures (a few minutes on 2 cores)
    python benchmarks/bench_vocab.py --quick         # the sizes tests/tokenizer/test_model_vocab.py uses
    python benchmarks/bench_vocab.py --continue-steps 200   # then pieces+stages vs mean+all, same steps
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Sizes:
    vocab_size: int = 4000      # base tokenizer
    new_tokens: int = 600       # added by extension on the finance Q&A
    hidden: int = 192
    layers: int = 4
    seq_len: int = 128
    batch: int = 16
    steps: int = 600
    lr: float = 3e-3
    seed: int = 0


QUICK = Sizes(vocab_size=1500, new_tokens=300, hidden=96, layers=2, seq_len=96, batch=12, steps=250, lr=5e-3)


def _texts():
    from moai_llm import corpora

    general = {lang: list(corpora.iter_texts(lang)) for lang in corpora.languages()}
    general_held = [t for lang in corpora.languages() for t in corpora.iter_texts(lang, split="heldout")]
    qa = [f"{r['input']}\n{r['output']}" for r in corpora.finance_qa("train")]
    qa_held = [f"{r['input']}\n{r['output']}" for r in corpora.finance_qa("heldout")]
    return [t for texts in general.values() for t in texts], general_held, qa, qa_held


def train_base(workdir: Path, sizes: Sizes):
    """(model, base tokenizer folder): a tokenizer and a small model trained on the corpora."""
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer import train_tokenizer

    general, _, qa, _ = _texts()
    tok_dir = train_tokenizer(general + qa, workdir / "base_tok", vocab_size=sizes.vocab_size, show_progress=False)
    tok = _backend(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    stream = []
    for enc in tok.encode_batch(general + qa, add_special_tokens=False):
        stream += [eos] + enc.ids
    data = torch.tensor(stream, dtype=torch.long)
    torch.manual_seed(sizes.seed)
    rows = -(-tok.get_vocab_size(with_added_tokens=True) // 64) * 64
    config = MoaiConfig(vocab_size=rows, hidden_size=sizes.hidden, intermediate_size=3 * sizes.hidden,
                        num_hidden_layers=sizes.layers, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=sizes.hidden // 4, max_position_embeddings=4 * sizes.seq_len,
                        tie_word_embeddings=False, rope_theta=10000.0, eos_token_id=eos)
    model = MoaiForCausalLM(config)
    loss = train_steps(model, data, sizes, sizes.steps, sizes.lr)
    return model, tok_dir, loss


def train_steps(model, data, sizes: Sizes, steps: int, lr: float, stages: str | None = None,
                new_rows: range | None = None, weight_decay: float = 0.0) -> float:
    """AdamW on random windows of the token stream `data` (warmup, then linear decay); with
    `stages`, the StageController of moai_llm.training.stages decides what trains at each step."""
    from moai_llm.training.stages import StageController, parse_stages

    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 30) * max(0.05, 1 - s / steps))
    controller = StageController(model, optimizer, parse_stages(stages, new_rows, steps), new_rows) if stages else None
    gen = torch.Generator().manual_seed(sizes.seed)
    model.train()
    for step in range(steps):
        if controller is not None:
            controller.apply(step)
        starts = torch.randint(0, len(data) - sizes.seq_len - 1, (sizes.batch,), generator=gen)
        batch = torch.stack([data[s: s + sizes.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    if controller is not None:
        controller.apply(steps)  # leave every parameter trainable again
    model.eval()
    return float(loss.detach())


def _backend(tok_dir):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))


@torch.no_grad()
def bits_per_byte(model, tok_dir, texts: list[str], max_len: int) -> float:
    """Sum over documents of -log2 p(text | <|endoftext|>) divided by the text's UTF-8 bytes.

    Each document is scored alone after the end-of-text token (the same string and id in both
    tokenizers), so the two tokenizers are compared on the same bytes.
    """
    tok = _backend(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    nats, nbytes = 0.0, 0
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids = torch.tensor([[eos] + enc.ids[: max_len - 1]])
        text_bytes = len(tok.decode(enc.ids[: max_len - 1], skip_special_tokens=False).encode("utf-8"))
        logits = model(input_ids=ids).logits[0, :-1].float()
        nats += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        nbytes += text_bytes
    return nats / math.log(2) / nbytes


def figures(sizes: Sizes, workdir: Path | None = None, continue_steps: int = 0) -> dict:
    """Train, extend, grow both ways and measure; returns every figure and ratio."""
    from moai_llm.progress import set_quiet
    from moai_llm.tokenizer.extend import extend_tokenizer
    from moai_llm.tokenizer.model_vocab import grow_embeddings

    set_quiet(True)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-vocab-"))
    started = time.time()
    model, base_dir, final_loss = train_base(workdir, sizes)
    train_s = time.time() - started
    _, general_held, qa, qa_held = _texts()
    base_size = _backend(base_dir).get_vocab_size(with_added_tokens=True)
    report = extend_tokenizer(base_dir, qa, workdir / "finance_tok", base_size + sizes.new_tokens, heldout=general_held)
    new_dir = workdir / "finance_tok"
    grown = {}
    for method in ("pieces", "mean"):
        m = copy.deepcopy(model)
        grow_embeddings(m, _backend(new_dir).get_vocab_size(with_added_tokens=True), method,
                        base_tokenizer=base_dir, new_tokenizer=new_dir)
        grown[method] = m.eval()
    max_len = 4 * sizes.seq_len
    out = {"sizes": sizes.__dict__, "train_seconds": round(train_s, 1), "final_train_loss": round(final_loss, 3),
           "new_tokens": report["vocab_size"] - base_size, "domain": {}, "general": {}}
    for name, texts in (("domain", qa_held), ("general", general_held)):
        base = bits_per_byte(model, base_dir, texts, max_len)
        out[name] = {"base": base, **{k: bits_per_byte(m, new_dir, texts, max_len) for k, m in grown.items()}}
        out[name]["pieces/base"] = out[name]["pieces"] / base
        out[name]["mean/base"] = out[name]["mean"] / base
    if continue_steps:
        out["continued"] = _continue(grown, base_size, new_dir, sizes, continue_steps, qa, qa_held, general_held,
                                     max_len, out)
    return out


def _continue(grown, base_size, new_dir, sizes: Sizes, steps: int, qa, qa_held, general_held, max_len, out) -> dict:
    """Continued pretraining on the finance Q&A with the new tokenizer, the same steps for both:
    pieces + stages (new rows first, for half the steps) against mean + everything at once."""
    tok = _backend(new_dir)
    eos = tok.token_to_id("<|endoftext|>")
    stream = []
    for enc in tok.encode_batch(qa, add_special_tokens=False):
        stream += [eos] + enc.ids
    data = torch.tensor(stream, dtype=torch.long)
    new_rows = range(base_size, tok.get_vocab_size(with_added_tokens=True))
    runs = {"pieces+stages": ("pieces", f"new-embeddings:{steps // 2},all"), "mean+all": ("mean", None)}
    result = {"steps": steps, "lr": sizes.lr / 10}
    for label, (method, stages) in runs.items():
        model = copy.deepcopy(grown[method])
        train_steps(model, data, sizes, steps, sizes.lr / 10, stages, new_rows, weight_decay=0.1)
        result[label] = {"domain": bits_per_byte(model, new_dir, qa_held, max_len),
                         "general": bits_per_byte(model, new_dir, general_held, max_len)}
        for name in ("domain", "general"):
            result[label][f"{name}/base"] = result[label][name] / out[name]["base"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small sizes the test uses")
    parser.add_argument("--steps", type=int, help="training steps of the base model")
    parser.add_argument("--continue-steps", type=int, default=0,
                        help="then continue pretraining on the finance Q&A this many steps: pieces + stages "
                             "(new-embeddings for half) against mean + all at once")
    args = parser.parse_args()
    sizes = copy.copy(QUICK if args.quick else Sizes())
    if args.steps:
        sizes.steps = args.steps
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = figures(sizes, continue_steps=args.continue_steps)
    print(json.dumps(result, indent=2))
    for name in ("domain", "general"):
        r = result[name]
        print(f"{name:8s} bits/byte  base {r['base']:.4f}  pieces {r['pieces']:.4f} ({r['pieces/base']:.4f}x)  "
              f"mean {r['mean']:.4f} ({r['mean/base']:.4f}x)")
    for label, r in (result.get("continued") or {}).items():
        if isinstance(r, dict):
            print(f"after {result['continued']['steps']} steps {label:14s} domain {r['domain']:.4f} "
                  f"({r['domain/base']:.4f}x base)  general {r['general']:.4f} ({r['general/base']:.4f}x base)")
    print(f"load average {os.getloadavg()[0]:.2f}; base trained {sizes.steps} steps in {result['train_seconds']} s")


if __name__ == "__main__":
    main()
