"""Benchmark `moai data prepare`: packing efficiency, throughput and peak memory vs baselines.

    python benchmarks/bench_data.py            # everything (the scale part writes ~550 MB, then deletes it)
    python benchmarks/bench_data.py --quick    # smaller inputs, no scale part (~1 min)
    python benchmarks/bench_data.py --write    # also write benchmarks/results/data.md

1. Packing efficiency (real tokens / row slots) at seq-len 2048 and 8192 on three corpora:
   Korean movie reviews (short), a long-tailed mix (reviews + Shakespeare cut into scene-sized
   chunks of 200-12000 tokens; tiny-shakespeare has no scene markers) and SFT conversations
   (ko_math_qa rendered with the chat template). moai's best-fit-decreasing and hierarchical
   packers (the same StreamPacker that prepare uses) against naive pad-each-document (documents
   longer than a row truncated) and greedy concatenate-and-cut (HF `group_texts`: tail dropped).
   "docs split" counts documents spread over two or more rows; "tokens cut" counts tokens that
   landed in another row than their document's start, or were dropped.
2. Throughput and peak RSS of `prepare_dataset` against `datasets.load_dataset("json") +
   .map(tokenizer, batched=True) + .map(group_texts)` producing rows of the same length, each
   run in a fresh process, A/B interleaved (the machine is shared).
3. Peak RSS of prepare at 50 MB and 500 MB of input (the reviews repeated).

Needs the reference corpora in ../shared/corpora (or $MOAI_SHARED_CORPORA); skips otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
RESULTS = ROOT / "benchmarks" / "results" / "data.md"


def read_reviews(limit: int | None = None) -> list[str]:
    import orjson

    out = []
    with open(CORPORA / "ko_movie_reviews.jsonl", "rb") as fh:
        for line in fh:
            out.append(orjson.loads(line)["text"])
            if limit and len(out) >= limit:
                break
    return out


def shakespeare_scenes(seed: int = 0) -> list[str]:
    """tiny-shakespeare cut at speech boundaries into chunks of 8-400 speeches (long-tailed)."""
    speeches = [s for s in (CORPORA / "en_shakespeare.txt").read_text().split("\n\n") if s.strip()]
    rng, out, i = random.Random(seed), [], 0
    while i < len(speeches):
        n = min(400, int(8 * rng.paretovariate(1.0)))
        out.append("\n\n".join(speeches[i:i + n]))
        i += n
    return out


def math_conversations() -> list[list[dict[str, str]]]:
    """ko_math_qa as chat: Korean Q/A, English Q/step-by-step A, and two-turn ko+en conversations."""
    import orjson

    rows = [orjson.loads(line) for line in (CORPORA / "ko_math_qa.json").read_bytes().splitlines() if line.strip()]
    ko = [[{"role": "user", "content": r["kor_question"]}, {"role": "assistant", "content": r["kor_answer"]}] for r in rows]
    en = [[{"role": "user", "content": r["question"]},
           {"role": "assistant", "content": r["reasoning_completion"].strip()}] for r in rows]
    both = [k + e for k, e in zip(ko, en, strict=True)]
    return ko + en + both


def train_bench_tokenizer(folder: Path, quick: bool) -> Path:
    from moai_llm.tokenizer import train_tokenizer

    texts = read_reviews(20_000 if quick else 100_000) + shakespeare_scenes() + [
        m["content"] for c in math_conversations() for m in c]
    return train_tokenizer(texts, folder / "tok", vocab_size=8000 if quick else 16000)


# ---------------------------------------------------------------- 1. packing efficiency


def baselines(lengths, seq_len: int) -> dict[str, dict]:
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    naive_kept = np.minimum(lengths, seq_len)
    naive = {"rows": len(lengths), "efficiency": naive_kept.sum() / (len(lengths) * seq_len),
             "docs_split": 0, "tokens_cut": total - int(naive_kept.sum())}
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rows = total // seq_len
    kept = rows * seq_len
    first_row_end = (starts // seq_len + 1) * seq_len
    # Tokens outside the row where their document starts, plus the dropped tail.
    in_other_row = np.where(starts < kept, np.clip(ends - first_row_end, 0, None), lengths)
    split = (starts < kept) & ((ends - 1) // seq_len != starts // seq_len)
    greedy = {"rows": rows, "efficiency": 1.0 if rows else 0.0, "docs_split": int(split.sum()),
              "tokens_cut": int(in_other_row.sum())}
    return {"pad each document": naive, "greedy concat-and-cut": greedy}


def moai_packing(lengths, seq_len: int, algorithm: str) -> dict:
    import numpy as np

    from moai_llm.data.packing import Doc, StreamPacker, split_long

    base = np.zeros(max(lengths) + 1, dtype=np.int32)
    packer = StreamPacker(seq_len, algorithm)
    rows = split = cut = 0
    for n in lengths:
        pieces = split_long(Doc(base[:n], None, 0), seq_len)
        if len(pieces) > 1:
            split, cut = split + 1, cut + n - len(pieces[0].ids)
        for piece in pieces:
            rows += len(packer.add(piece))
    rows += len(packer.finish())
    return {"rows": rows, "efficiency": sum(lengths) / (rows * seq_len), "docs_split": split, "tokens_cut": cut}


def packing_section(tok_dir: Path, quick: bool) -> list[str]:
    from moai_llm.data.encoding import Encoder, load_backend
    from moai_llm.data.sft import ChatTemplate, render

    enc = Encoder(load_backend(tok_dir))
    template = ChatTemplate.from_dir(tok_dir)
    reviews = read_reviews(50_000 if quick else None)
    review_lens = [len(d) for i in range(0, len(reviews), 4096) for d in enc.documents(reviews[i:i + 4096])]
    scene_lens = [len(d) for d in enc.documents(shakespeare_scenes())]
    mix_lens = review_lens[:60_000] + scene_lens
    random.Random(0).shuffle(mix_lens)
    rendered = [render(template, c) for c in math_conversations()]
    sft_lens = [len(ids) for ids, _ in enc.with_loss_spans([t for t, _ in rendered], [s for _, s in rendered])]
    corpora = {"Korean reviews": review_lens, "long-tailed mix (60k reviews + Shakespeare scenes)": mix_lens,
               "SFT conversations (ko_math_qa, chat template)": sft_lens,
               # 1,440 conversations fill only 26 rows of 8192, so one part-filled last row costs
               # ~4%; an 8-epoch run prepares every conversation 8 times (--weights 8).
               "SFT conversations x8 (the same, --weights 8)": sft_lens * 8}
    lines = ["## Packing efficiency", ""]
    for name, lens in corpora.items():
        lines.append(f"**{name}**: {len(lens):,} documents, {sum(lens):,} tokens, mean {sum(lens) / len(lens):.0f}, "
                     f"max {max(lens):,} tokens (eos / chat end tokens included)")
        lines += ["", "| seq-len | method | rows | efficiency | docs split | tokens cut |", "|---|---|---|---|---|---|"]
        for seq_len in (2048, 8192):
            results = baselines(lens, seq_len)
            for algorithm in ("bfd", "hierarchical"):
                results[f"moai {algorithm}"] = moai_packing(lens, seq_len, algorithm)
            bound = -(-sum(lens) // seq_len)
            longer = sum(n > seq_len for n in lens)
            for method, r in results.items():
                lines.append(f"| {seq_len} | {method} | {r['rows']:,} | {r['efficiency']:.3%} | {r['docs_split']:,} | {r['tokens_cut']:,} |")
            lines.append(f"| {seq_len} | (lower bound on rows: ceil(tokens/seq-len); documents longer than a row: {longer:,}) "
                         f"| {bound:,} | {sum(lens) / (bound * seq_len):.3%} | | |")
        lines.append("")
        print("\n".join(lines[-12:]), flush=True)
    return lines


# ---------------------------------------------------------------- 2./3. throughput and memory (child processes)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, path: str, tok_dir: str, out: str, seq_len: int) -> None:
    started = time.perf_counter()
    if kind.startswith("moai"):
        from moai_llm.data import prepare_dataset
        from moai_llm.progress import set_quiet

        set_quiet(True)
        work = time.perf_counter()
        threads = {"moai-1thread": 1, "moai-allcores": os.cpu_count() or 1}.get(kind)
        m = prepare_dataset([path], tok_dir, seq_len, out, force=True, num_proc=threads)
        tokens, rows = m["num_tokens"], m["num_rows"]
    else:
        import datasets
        from transformers import AutoTokenizer

        datasets.disable_progress_bars()
        tok = AutoTokenizer.from_pretrained(tok_dir)
        work = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=out + "/cache")
        eos = tok.eos_token_id

        def tokenize(batch):
            return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}

        def group(batch):  # HF run_clm's group_texts: concatenate, cut, drop the tail
            flat = [t for ids in batch["input_ids"] for t in ids]
            n = len(flat) // seq_len * seq_len
            rows = [flat[i:i + seq_len] for i in range(0, n, seq_len)]
            return {"input_ids": rows, "labels": [list(r) for r in rows]}

        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names)
        tokens = sum(len(x) for x in ds["input_ids"])
        ds = ds.map(group, batched=True, remove_columns=ds.column_names)
        rows = len(ds)
    seconds = time.perf_counter() - work
    rss = peak_rss_mb()
    print(json.dumps({"kind": kind, "seconds": seconds, "total_seconds": time.perf_counter() - started,
                      "tokens": tokens, "rows": rows, "peak_rss_mb": rss}))


def run_child(kind: str, path: Path, tok_dir: Path, scratch: Path, seq_len: int = 2048) -> dict:
    out = scratch / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(tok_dir), str(out), str(seq_len)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {kind}: {result['seconds']:.1f} s, {result['tokens'] / result['seconds'] / 1e3:.0f}k tok/s, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    return result


def throughput_section(tok_dir: Path, scratch: Path, quick: bool) -> list[str]:
    path = scratch / "reviews.jsonl"
    if quick:
        with open(CORPORA / "ko_movie_reviews.jsonl", "rb") as src, open(path, "wb") as dst:
            dst.writelines(line for _, line in zip(range(60_000), src, strict=False))
    else:
        shutil.copy(CORPORA / "ko_movie_reviews.jsonl", path)
    size = path.stat().st_size / 1e6
    print(f"throughput on {size:.0f} MB of reviews, seq-len 2048", flush=True)
    runs: dict[str, list[dict]] = {}
    for rep in range(1 if quick else 2):  # interleaved A/B (and C once)
        for kind in ("moai-allcores", "datasets.map", "moai-1thread")[: 3 if rep == 0 else 2]:
            runs.setdefault(kind, []).append(run_child(kind, path, tok_dir, scratch))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    base = best["datasets.map"]
    lines = ["## Prepare throughput and memory", "",
             f"Input: {size:.0f} MB of Korean reviews ({base['tokens']:,} tokens with eos), seq-len 2048, "
             f"{len(runs['moai-allcores'])} interleaved run(s) each in a fresh process, best run shown. Time excludes "
             "interpreter start and imports; peak RSS is the whole process.", "",
             "| pipeline | rows | seconds | tokens/s | vs datasets.map | peak RSS |", "|---|---|---|---|---|---|"]
    names = {"moai-allcores": "moai prepare, Rust tokenizer on every core (--num-proc N)",
             "moai-1thread": "moai prepare --num-proc 1",
             "datasets.map": "datasets.load_dataset + map(tokenizer, batched=True) + map(group_texts)"}
    for kind, r in best.items():
        tps = r["tokens"] / r["seconds"]
        lines.append(f"| {names[kind]} | {r['rows']:,} | {r['seconds']:.1f} | {tps / 1e3:.0f}k | "
                     f"{tps / (base['tokens'] / base['seconds']):.2f}x | {r['peak_rss_mb']:.0f} MB |")
    path.unlink()
    return lines + [""]


def scale_section(tok_dir: Path, scratch: Path) -> list[str]:
    src = (CORPORA / "ko_movie_reviews.jsonl").read_bytes()
    results = {}
    for target in (50, 500):
        path = scratch / f"reviews-{target}mb.jsonl"
        lines_src = src.splitlines(keepends=True)
        with open(path, "wb") as fh:  # whole reviews, repeated until the target size
            written, i = 0, 0
            while written < target * 1_000_000:
                fh.write(lines_src[i % len(lines_src)])
                written += len(lines_src[i % len(lines_src)])
                i += 1
        print(f"scale: {path.stat().st_size / 1e6:.0f} MB", flush=True)
        results[target] = run_child("moai", path, tok_dir, scratch) | {"input_mb": path.stat().st_size / 1e6}
        path.unlink()
    ratio = results[500]["peak_rss_mb"] / results[50]["peak_rss_mb"]
    lines = ["## Memory as input grows", "", "| input | tokens | rows | seconds | peak RSS |", "|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['input_mb']:.0f} MB (reviews repeated) | {r['tokens']:,} | {r['rows']:,} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} MB |")
    lines += ["", f"Peak RSS at 500 MB / at 50 MB: **{ratio:.2f}x** (goal: within 1.5x).", ""]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, tok_dir, out, seq_len = sys.argv[2:7]
        child(kind, path, tok_dir, out, int(seq_len))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, no scale part")
    parser.add_argument("--scale", action="store_true", help="run the 50/500 MB part even with --quick")
    parser.add_argument("--skip", nargs="*", default=[], choices=["packing", "throughput", "scale"])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    if not (CORPORA / "ko_movie_reviews.jsonl").exists():
        print(f"skipped: the reference corpora are not in {CORPORA} (set MOAI_SHARED_CORPORA)")
        return
    scratch = Path(tempfile.mkdtemp(prefix="moai-bench-data-"))
    try:
        tok_dir = train_bench_tokenizer(scratch, args.quick)
        lines = ["# Data preparation benchmarks", "",
                 f"Command: `python benchmarks/bench_data.py{' --quick' if args.quick else ''}`  ",
                 f"Machine: 2-core CPU, 24 GiB, no GPU, shared with other jobs ({platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores visible)  ",
                 f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
                 f"Tokenizer: `train_tokenizer` on reviews + Shakespeare + ko_math_qa, vocab {8000 if args.quick else 16000}", ""]
        if "packing" not in args.skip:
            lines += packing_section(tok_dir, args.quick)
        if "throughput" not in args.skip:
            lines += throughput_section(tok_dir, scratch, args.quick)
        if "scale" not in args.skip and (args.scale or not args.quick):
            lines += scale_section(tok_dir, scratch)
        if args.write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text("\n".join(lines) + "\n")
            print(f"wrote {RESULTS}")
        else:
            print("\n".join(lines))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
