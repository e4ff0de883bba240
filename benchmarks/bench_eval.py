"""Bits per byte: moai's packed, fused scoring vs lm-evaluation-harness's rolling log-likelihood
(`HFLM.loglikelihood_rolling`, the path of lm-eval's `wikitext` task), and peak memory at a
large vocabulary.

    python benchmarks/bench_eval.py                  # both parts (the memory part takes minutes)
    python benchmarks/bench_eval.py --part speed     # tokens/s and the figure, 3 interleaved rounds
    python benchmarks/bench_eval.py --part memory    # vocab 122,880, hidden 3840, fresh processes

Speed: the same model (the `small` preset, random weights, vocabulary of an 8k tokenizer trained
here), the same documents and the same machine; lm-eval's HFLM wraps the already-loaded model
with `max_length = seq_len - 1`, which gives exactly moai's windows (the separator first, then
disjoint windows with one token of context), so the two sums of negative log-likelihood must
agree. Timed: tokenizing + packing + scoring for moai; `loglikelihood_rolling` (which tokenizes)
for lm-eval. Both at batch 8 and at batch 64 (moai: rows of seq_len tokens; lm-eval: windows, as
long as a row for long documents, as long as the document for short ones). Texts: Korean
movie reviews (short documents, many to a row) and tiny-shakespeare in 4,000-character documents
(longer than a row: windows). Text from ../shared/corpora (or MOAI_SHARED_CORPORA); skips without.

Memory: each method scores 2 rows x 2048 tokens in a fresh process; the figure is the peak RSS
during scoring minus the RSS before it (VmHWM reset via /proc/self/clear_refs), next to the size
of the full fp32 logits and the fused loss's bound (one chunk of logits: chunk x vocab x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
CORPORA = Path(os.environ.get("MOAI_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))
GiB = 1024**3


def _texts(quick: bool) -> dict[str, list[str]]:
    reviews, n = [], 300 if quick else 1000
    with open(CORPORA / "ko_movie_reviews.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 300_000 and len(reviews) < n:  # past the tokenizer's training lines
                text = json.loads(line)["text"]
                if text.strip():
                    reviews.append(text)
    play = (CORPORA / "en_shakespeare.txt").read_text(encoding="utf-8")[-(40_000 if quick else 160_000):]
    scenes = [play[i:i + 4000] for i in range(0, len(play), 4000)]
    return {"ko reviews (short documents)": reviews, "shakespeare, 4,000-char documents (windows)": scenes}


def _setup(workdir: Path):
    import torch

    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer import load_tokenizer, train_tokenizer

    train = []
    with open(CORPORA / "ko_movie_reviews.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 60_000:
                break
            train.append(json.loads(line)["text"])
    train += (CORPORA / "en_shakespeare.txt").read_text(encoding="utf-8")[:600_000].split("\n\n")
    tok_dir = train_tokenizer(train, workdir / "tok", vocab_size=8192)
    tokenizer = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = MoaiForCausalLM(MoaiConfig.from_preset("small", vocab_size=len(tokenizer))).eval()
    return model, tokenizer


def _moai(model, tokenizer, texts, seq_len, batch):
    from moai_llm.eval import pack_texts, score_rows

    start = time.perf_counter()
    rows = pack_texts(texts, tokenizer, seq_len)
    scores = score_rows(model, rows, micro_batch=batch)
    return scores["nll_nats"], scores["tokens"], time.perf_counter() - start


def _lm_eval(lm, texts):
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)]
    start = time.perf_counter()
    lls = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    return -math.fsum(lls), time.perf_counter() - start


def speed(args) -> None:
    import torch

    from moai_llm.eval.harness import make_lm

    texts = _texts(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = _setup(Path(tmp))
    batches = [int(b) for b in args.batches.split(",")]
    lms = {b: make_lm(model, tokenizer, batch_size=b, max_length=args.seq_len - 1) for b in batches}
    print(f"model: small preset, {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tokenizer)}; "
          f"seq_len {args.seq_len}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    print("| text | documents | bytes | tokens | batch | moai tok/s | lm-eval tok/s | moai / lm-eval, median (rounds) | "
          "bits per byte, moai | lm-eval | relative difference of the NLL |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, docs in texts.items():
        n_bytes = sum(len(t.encode("utf-8")) for t in docs)
        rates = {(who, b): [] for who in ("moai", "lm-eval") for b in batches}
        ratios, nll = {b: [] for b in batches}, {}
        for r in range(args.rounds):
            for b, lm in lms.items():
                nll["moai", b], tokens, t_m = _moai(model, tokenizer, docs, args.seq_len, b)
                nll["lm-eval", b], t_l = _lm_eval(lm, docs)
                rates["moai", b].append(tokens / t_m)
                rates["lm-eval", b].append(tokens / t_l)
                ratios[b].append(t_l / t_m)
                print(f"  {name} round {r + 1}, batch {b}: moai {t_m:.2f} s, lm-eval {t_l:.2f} s, "
                      f"nll {nll['moai', b]:.4f} vs {nll['lm-eval', b]:.4f}; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        for b in batches:
            m, ref = nll["moai", b], nll["lm-eval", b]
            print(f"| {name} | {len(docs):,} | {n_bytes:,} | {tokens:,} | {b} | {statistics.median(rates['moai', b]):,.0f} | "
                  f"{statistics.median(rates['lm-eval', b]):,.0f} | {statistics.median(ratios[b]):.2f}x "
                  f"({', '.join(f'{x:.2f}' for x in ratios[b])}) | {m / (math.log(2) * n_bytes):.6f} | "
                  f"{ref / (math.log(2) * n_bytes):.6f} | {abs(m - ref) / ref:.1e} |")


# ---------------------------------------------------------------- memory, one method per process


def memory_worker(method: str, chunk: int) -> None:
    import torch
    from bench_loss import _peak_bytes, _reset_peak, _rss_bytes

    from moai_llm.config import MoaiConfig
    from moai_llm.eval import pack_texts, score_rows
    from moai_llm.eval.harness import make_lm
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer import load_tokenizer, train_tokenizer

    play = (CORPORA / "en_shakespeare.txt").read_text(encoding="utf-8")
    tok = load_tokenizer(train_tokenizer([play[:200_000]], Path(tempfile.mkdtemp()) / "tok", vocab_size=2048))
    config = MoaiConfig(vocab_size=122_880, hidden_size=3840, intermediate_size=1024, num_hidden_layers=1,
                        num_attention_heads=30, num_key_value_heads=6, head_dim=128, max_position_embeddings=4096,
                        tie_word_embeddings=True, loss_chunk_size=chunk, eos_token_id=0, pad_token_id=3)
    torch.manual_seed(0)
    model = MoaiForCausalLM(config).eval()
    seq_len, docs = 2048, [play[i:i + 7000] for i in range(300_000, 320_000, 7000)][:2]
    rows = pack_texts(docs, tok, seq_len)
    lm = make_lm(model, tok, batch_size=2, max_length=seq_len - 1) if method == "lm-eval" else None
    with torch.no_grad():  # warm-up: allocator pools and kernels, outside the measurement
        model(torch.zeros(1, 16, dtype=torch.long))
    baseline = _rss_bytes()
    reset_ok = _reset_peak()
    start = time.perf_counter()
    if method == "moai":
        scores = score_rows(model, rows, micro_batch=2)
        nll, tokens = scores["nll_nats"], scores["tokens"]
    else:
        nll, _ = _lm_eval(lm, docs)
        tokens = rows.tokens
    seconds = time.perf_counter() - start
    print(json.dumps({"extra_bytes": _peak_bytes(reset_ok) - baseline, "seconds": seconds, "nll": nll,
                      "tokens": tokens, "rows": len(rows)}))


def memory(args) -> None:
    chunk = args.chunk
    print(f"vocab 122,880, hidden 3840, 1 layer, fp32; 2 rows x 2048 tokens; fused chunk {chunk}; "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = {}
    for method in ("moai", "lm-eval"):
        cmd = [sys.executable, __file__, "--worker", method, "--chunk", str(chunk)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {method}: {results[method]}", file=sys.stderr)
    full = 2 * 2048 * 122_880 * 4  # the logits of one forward of 2 rows (moai) or 2 windows (lm-eval)
    bound = chunk * 122_880 * 4
    print("| method | tokens scored | peak memory during scoring | fp32 logits of one forward | fused bound (chunk x vocab x 4 B) | time | nll |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, res in results.items():
        print(f"| {method} | {res['tokens']:,} | {res['extra_bytes'] / GiB:.2f} GiB | {full / GiB:.2f} GiB | "
              f"{bound / GiB:.2f} GiB | {res['seconds']:.1f} s | {res['nll']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="fewer documents (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batches", default="8,64",
                        help="batch sizes: moai rows of seq_len per forward, lm-eval windows per forward")
    parser.add_argument("--chunk", type=int, default=1024, help="fused loss chunk for the memory part")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not CORPORA.is_dir():
        print(f"skipped: no reference corpora at {CORPORA} (set MOAI_SHARED_CORPORA)", file=sys.stderr)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        return memory_worker(args.worker, args.chunk)
    if args.part in ("speed", "all"):
        speed(args)
    if args.part in ("memory", "all"):
        memory(args)


if __name__ == "__main__":
    main()
