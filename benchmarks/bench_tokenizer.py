"""Benchmark `moai tokenizer train` modes against SentencePiece BPE and Unigram, in one run.

For each trainer (moai default/fast/turbo/ultrafast, SentencePiece BPE/Unigram) on the same
training text (Korean movie reviews + Shakespeare from ../shared/corpora, vocab 32k), measures
training time, peak RSS of the training process, and on held-out lines (never trained on):
characters per token (higher = better compression) and the share of lines that round-trip
exactly (decode(encode(line)) == line). Runs are interleaved over repetitions (other jobs share
the CPU) and each runs in its own process so its peak memory is its own. `--memory` also trains
the default mode on 50 MB and on 500 MB (the 50 MB repeated and shuffled; deleted afterwards).

    python benchmarks/bench_tokenizer.py            # full: ~45 MB, vocab 32k, 2 repetitions
    python benchmarks/bench_tokenizer.py --quick    # 6 MB, vocab 8k, 1 repetition
    python benchmarks/bench_tokenizer.py --memory   # adds the 50 MB vs 500 MB memory check
    python benchmarks/bench_tokenizer.py --memory-only

Reference text: ../shared/corpora relative to the repo root, or $MOAI_SHARED_CORPORA.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOAI_MODES = ["default", "fast", "turbo", "ultrafast"]
SP_KINDS = ["sp-bpe", "sp-bpe-lossless", "sp-unigram"]


def corpora_dir() -> Path | None:
    d = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
    return d if (d / "ko_movie_reviews.jsonl").is_file() and (d / "en_shakespeare.txt").is_file() else None


def prepare(src: Path, work: Path, max_train_bytes: int | None) -> dict:
    """ko_train.txt (one review per line), en_train.txt, and held-out line lists per language.
    Returns {"train": "ko_file,en_file", "held": {...}}: trainers get the two files as a user
    would give them (`--input ko.txt --input en.txt`)."""
    ko_train, ko_held = [], []
    with open(src / "ko_movie_reviews.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f):
            text = " ".join(json.loads(line)["text"].split("\n")).strip()
            if text:
                (ko_held if n % 50 == 49 else ko_train).append(text)
    en_lines = [ln for ln in (src / "en_shakespeare.txt").read_text(encoding="utf-8").split("\n")]
    cut = int(len(en_lines) * 0.9)
    en_train, en_held = en_lines[:cut], [ln for ln in en_lines[cut:] if ln.strip()]
    if max_train_bytes:  # --quick: keep the language mix, shrink the Korean part
        budget = max_train_bytes - sum(len(x.encode()) + 1 for x in en_train)
        kept, used = [], 0
        for t in ko_train:
            used += len(t.encode()) + 1
            if used > budget:
                break
            kept.append(t)
        ko_train = kept
        ko_held = ko_held[:2000]
    ko_file, en_file = work / "ko_train.txt", work / "en_train.txt"
    ko_file.write_text("".join(t + "\n" for t in ko_train), encoding="utf-8")
    en_file.write_text("\n".join(en_train) + "\n", encoding="utf-8")
    return {"train": f"{ko_file},{en_file}", "held": {"ko": ko_held, "en": en_held}}


# ---- workers (each in its own process) ---------------------------------------------------

def worker(kind: str, train: str, out: str, vocab: int) -> dict:
    t0 = time.perf_counter()
    if kind in SP_KINDS:
        import sentencepiece as spm

        lossless = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                    "byte_fallback": True} if kind.endswith("-lossless") else {}
        spm.SentencePieceTrainer.train(
            input=train.split(","), model_prefix=os.path.join(out, "sp"), vocab_size=vocab,
            model_type=kind.split("-")[1], num_threads=os.cpu_count(), minloglevel=2, **lossless,
        )
    else:
        from moai_llm.tokenizer import train_tokenizer
        from moai_llm.tokenizer.text_streams import resolve_inputs

        train_tokenizer(resolve_inputs(train.split(",")), out, vocab_size=vocab, mode=kind)
    seconds = time.perf_counter() - t0
    return {"kind": kind, "seconds": seconds, "peak_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it starts afresh at exec,
    so the parent's memory at fork is not counted)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(kind: str, train: str, out: str, vocab: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--train", train, "--out", out, "--vocab", str(vocab)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- evaluation --------------------------------------------------------------------------

def encoder(kind: str, out: str):
    """(encode lines → list of id lists, decode ids → str) for a trained tokenizer."""
    if kind in SP_KINDS:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "sp.model"))
        return (lambda lines: sp.encode(lines)), sp.decode
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    return (lambda lines: [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]), tok.decode


def evaluate(kind: str, out: str, held: dict[str, list[str]]) -> dict:
    encode, decode = encoder(kind, out)
    scores = {}
    for lang, lines in held.items():
        ids = encode(lines)
        tokens = sum(len(x) for x in ids)
        same = sum(decode(x) == line for x, line in zip(ids, lines, strict=True))
        scores[lang] = {"chars_per_token": sum(map(len, lines)) / tokens, "round_trip": same / len(lines),
                        "chars": sum(map(len, lines)), "tokens": tokens}
    return scores


def memory_check(train: str, work: Path) -> list[dict]:
    """Default mode on 50 MB and on 500 MB (the training lines repeated and shuffled): peak RSS
    of each. Both files are deleted afterwards."""
    lines = [ln for f in train.split(",") for ln in Path(f).read_text(encoding="utf-8").splitlines(keepends=True)]
    rng = random.Random(0)
    small, big = work / "50mb.txt", work / "500mb.txt"
    for path, target in ((small, 50_000_000), (big, 500_000_000)):
        with open(path, "w", encoding="utf-8") as f:
            size = 0
            while size < target:  # the training lines again and again, reshuffled each pass
                rng.shuffle(lines)
                for ln in lines:
                    f.write(ln)
                    size += len(ln.encode())
                    if size >= target:
                        break
    rows = []
    for path in (small, big):
        r = run_worker("default", str(path), str(work / f"mem-{path.stem}"), 32000)
        r["input_mb"] = path.stat().st_size / 1e6
        rows.append(r)
        path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="6 MB of training text, vocab 8k, 1 repetition")
    ap.add_argument("--memory", action="store_true", help="also compare peak memory on 50 MB vs 500 MB")
    ap.add_argument("--memory-only", action="store_true", help="only the 50 MB vs 500 MB memory check")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--kinds", default=",".join(SP_KINDS[:2] + MOAI_MODES + SP_KINDS[2:]))
    ap.add_argument("--worker"), ap.add_argument("--train"), ap.add_argument("--out"), ap.add_argument("--vocab", type=int)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.train, args.out, args.vocab)))
        return
    src = corpora_dir()
    if src is None:
        print("skipped: reference corpora not found (../shared/corpora or $MOAI_SHARED_CORPORA)")
        return
    vocab = 8000 if args.quick else 32000
    reps = args.reps or (1 if args.quick else 2)
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_tok_") as tmp:
        work = Path(tmp)
        data = prepare(src, work, 6_000_000 if args.quick else None)
        mb = sum(os.path.getsize(f) for f in data["train"].split(",")) / 1e6
        print(f"training text: {mb:.1f} MB, vocab {vocab}, {reps} repetition(s), cpus {os.cpu_count()}", flush=True)
        if args.memory_only:
            kinds, args.memory = [], True
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep in range(reps):
            order = kinds if rep % 2 == 0 else kinds[::-1]  # interleave A/B
            for kind in order:
                if kind == "sp-unigram" and rep > 0:
                    continue  # minutes per run: measured once
                out = work / f"{kind}-{rep}"
                out.mkdir()
                r = run_worker(kind, data["train"], str(out), vocab)
                print(f"  rep {rep} {kind:11s} {r['seconds']:7.1f} s  {r['peak_mib']:7.0f} MiB", flush=True)
                runs[kind].append(r)
        rows = []
        for kind in kinds:
            score = evaluate(kind, str(work / f"{kind}-0"), data["held"])
            rows.append({"kind": kind, "seconds": statistics.median(r["seconds"] for r in runs[kind]),
                         "peak_mib": max(r["peak_mib"] for r in runs[kind]), **score})
        if rows:
            report(rows, mb, vocab, reps)
        if "default" in kinds and "sp-bpe-lossless" in kinds:
            first_word_gap(work, data["held"]["ko"])
        if args.memory:
            mem = memory_check(data["train"], work)
            print("\nmemory, default mode, vocab 32000:")
            for r in mem:
                print(f"  {r['input_mb']:6.0f} MB input: {r['seconds']:6.1f} s, peak {r['peak_mib']:.0f} MiB")
            print(f"  peak ratio 500 MB / 50 MB: {mem[1]['peak_mib'] / mem[0]['peak_mib']:.2f}x "
                  f"(input ratio {mem[1]['input_mb'] / mem[0]['input_mb']:.1f}x)")


def first_word_gap(work: Path, lines: list[str]) -> None:
    """How much of the Korean gap to lossless SentencePiece is the first word of each line
    (SentencePiece's dummy prefix encodes it like a mid-sentence word)."""
    sp_enc, _ = encoder("sp-bpe-lossless", str(work / "sp-bpe-lossless-0"))
    moai_enc, _ = encoder("default", str(work / "default-0"))
    firsts = [line.split(" ")[0] for line in lines]
    total = {k: sum(map(len, enc(lines))) for k, enc in (("sp", sp_enc), ("moai", moai_enc))}
    first = {k: sum(map(len, enc(firsts))) for k, enc in (("sp", sp_enc), ("moai", moai_enc))}
    spaced = sum(map(len, moai_enc([" " + w for w in firsts])))
    print(f"\nko held-out tokens: SP lossless {total['sp']}, moai default {total['moai']} "
          f"(gap {total['moai'] - total['sp']}); first words of lines: SP {first['sp']}, moai {first['moai']} "
          f"(gap {first['moai'] - first['sp']}; moai with a space in front: {spaced})")


def report(rows: list[dict], mb: float, vocab: int, reps: int) -> None:
    base = {r["kind"]: r for r in rows}
    sp, ref = base.get("sp-bpe"), base.get("default")

    def rel(r: dict, lang: str) -> str:
        return f"{r[lang]['chars_per_token'] / ref[lang]['chars_per_token'] - 1:+.1%}" if ref else "-"

    print("\n| trainer | train s | time vs SP BPE | peak MiB | ko chars/tok | en chars/tok | ko vs default "
          "| en vs default | ko round-trip | en round-trip |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speed = f"{r['seconds'] / sp['seconds']:.2f}x" if sp else "-"
        print(f"| {r['kind']} | {r['seconds']:.1f} | {speed} | {r['peak_mib']:.0f} | "
              f"{r['ko']['chars_per_token']:.3f} | {r['en']['chars_per_token']:.3f} | {rel(r, 'ko')} | {rel(r, 'en')} | "
              f"{r['ko']['round_trip']:.1%} | {r['en']['round_trip']:.1%} |")
    print(f"\n(training text {mb:.1f} MB, vocab {vocab}, median time of {reps} interleaved repetition(s), "
          f"sp-unigram once; held-out: {ref['ko']['chars'] if ref else '?'} ko chars, "
          f"{ref['en']['chars'] if ref else '?'} en chars)")


if __name__ == "__main__":
    main()
