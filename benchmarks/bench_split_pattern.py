"""Compression of moai's tokenizer under candidate split patterns (the pre-tokenizer's regex).

New moai tokenizers must use a split pattern that llama.cpp implements exactly, so that a GGUF
export tokenizes as transformers does. This trains one tokenizer per candidate on the same text
(the embedded ko/en/ja/zh corpora's train split, plus Korean movie reviews, Shakespeare and
Korean/English arithmetic problems from ../shared/corpora when present) and measures bytes per
token (higher = better compression) on held-out documents of each language.

    python benchmarks/bench_split_pattern.py            # vocab 8k, ~6 MB of training text
    python benchmarks/bench_split_pattern.py --quick    # vocab 4k, embedded corpora only

Candidates: `moai-2026` (the pattern moai used before: Llama-3's with ` ?\\p{N}{1,3}`, which no
llama.cpp pre-tokenizer implements), `llama3` (llama.cpp `llama-bpe`), `qwen2` (llama.cpp
`qwen2`: single digits), `gpt-4o` (case-aware words; llama.cpp's `gpt-4o` runs an approximation of it, exact for ASCII
letters only). llama3 and qwen2 are written with llama.cpp's spelling of the contractions (the
same splits as `(?i:'s|...)`, faster in the regex engine); llama3 is trained with
`ignore_merges`, as llama.cpp's `llama-bpe` tokenizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moai_llm import corpora  # noqa: E402

CANDIDATES = {
    "moai-2026": (r"'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "llama3": (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "qwen2": (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "gpt-4o": (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}


def shared_dir() -> Path | None:
    d = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
    return d if (d / "ko_movie_reviews.jsonl").is_file() else None


def texts(quick: bool) -> tuple[list[str], dict[str, list[str]]]:
    """Training texts and held-out documents by set name (every 10th document is held out)."""
    train = [t for lang in corpora.languages() for t in corpora.iter_texts(lang, "train")]
    held = {lang: list(corpora.iter_texts(lang, "heldout")) for lang in corpora.languages()}
    src = None if quick else shared_dir()
    if src is None:
        return train, held
    extra: dict[str, list[str]] = {"ko-reviews": [], "en-shakespeare": [], "math-qa": []}
    with open(src / "ko_movie_reviews.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= 60_000:
                break
            extra["ko-reviews"].append(json.loads(line)["text"])
    lines = (src / "en_shakespeare.txt").read_text(encoding="utf-8").split("\n\n")
    extra["en-shakespeare"] = [p for p in lines if p.strip()]
    with open(src / "ko_math_qa.json", encoding="utf-8") as f:  # JSON lines despite the name
        records = [json.loads(line) for line in f if line.strip()]
    for rec in records:
        extra["math-qa"].extend(str(rec[k]) for k in ("prompt", "kor_question") if rec.get(k))
    for name, docs in extra.items():
        train.extend(d for i, d in enumerate(docs) if i % 10 != 9)
        held[name] = [d for i, d in enumerate(docs) if i % 10 == 9]
    return train, held


def measure(pattern: str, ignore_merges: bool, train: list[str], held: dict[str, list[str]], vocab: int) -> dict:
    import moai_llm.tokenizer.train as trainmod
    from moai_llm.tokenizer import load_tokenizer

    saved = (trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES)
    trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES = pattern, ignore_merges
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = trainmod.train_tokenizer(train, Path(tmp) / "tok", vocab_size=vocab)
            seconds = time.perf_counter() - start
            tok = load_tokenizer(path)
    finally:
        trainmod.SPLIT_PATTERN, trainmod.IGNORE_MERGES = saved
    row = {"train_s": round(seconds, 1)}
    total_bytes = total_tokens = 0
    for name, docs in held.items():
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        n_tokens = sum(len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"])
        row[name] = round(n_bytes / n_tokens, 3)
        total_bytes, total_tokens = total_bytes + n_bytes, total_tokens + n_tokens
    row["all"] = round(total_bytes / total_tokens, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="vocab 4k on the embedded corpora only")
    args = parser.parse_args()
    train, held = texts(args.quick)
    vocab = 4000 if args.quick else 8000
    print(f"training texts: {len(train)} ({sum(len(t.encode()) for t in train) / 1e6:.1f} MB), vocab {vocab}")
    print("bytes per token on held-out documents (higher = better compression)")
    header = ["pattern", *held, "all", "train_s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, pattern in CANDIDATES.items():
        row = measure(pattern, name == "llama3", train, held, vocab)
        print("| " + " | ".join([name, *(str(row[k]) for k in header[1:])]) + " |", flush=True)


if __name__ == "__main__":
    main()
