"""Check the memory predictions behind the guards of `moai data prepare --seq-len` and
`moai tokenizer train --vocab-size` against real runs.

The guards refuse a request whose predicted memory exceeds what the machine has, so the
predictions must be honest. Each case runs in its own process and is compared with:

- data prepare: the growth of peak RSS during `prepare_dataset` vs `footprint.memory_need`
  (one long row of a tiny input, where the row buffers dominate; and the Korean reviews, where
  the packing buffer does);
- tokenizer vocabulary tables: the growth of peak virtual memory (VmPeak: the tables are
  reserved whole and touched as they fill) vs `trainer_memory.vocab_table_bytes`;
- tokenizer word tables: the growth of peak RSS while training on 2 to 48 MB of reviews vs
  `trainer_memory.words_bytes`.

    python benchmarks/bench_memory_guard.py            # everything (~2 minutes)
    python benchmarks/bench_memory_guard.py --quick    # no reviews (no shared corpora needed)

Reference text: ../shared/corpora relative to the repo root, or $MOAI_SHARED_CORPORA.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PREPARE = """
import json, re, sys, psutil
def peak_rss():  # VmHWM: ru_maxrss would carry the parent's peak over fork and exec
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
from moai_llm.data.prepare import prepare_dataset
import moai_llm.data.encoding, moai_llm.data.store, moai_llm.data.packing
start = psutil.Process().memory_info().rss
prepare_dataset([sys.argv[1]], sys.argv[2], int(sys.argv[3]), sys.argv[4], max_positions=int(sys.argv[3]), force=True)
print(peak_rss() - start)
"""

TABLES = """
import re, sys
from moai_llm.tokenizer.train import train_tokenizer
def vmpeak():
    return int(re.search(r"VmPeak:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
train_tokenizer(["warm up the trainer once"] * 10, sys.argv[3] + "/warm", vocab_size=300, mode=sys.argv[2])
before = vmpeak()
train_tokenizer(["hello world the quick brown fox"] * 50, sys.argv[3] + "/tok", vocab_size=int(sys.argv[1]), mode=sys.argv[2])
print(vmpeak() - before)
"""

WORDS = """
import json, re, sys, psutil
def peak_rss():  # VmHWM: ru_maxrss would carry the parent's peak over fork and exec
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
from moai_llm.tokenizer.train import train_tokenizer
texts, size = [], 0
for line in open(sys.argv[1], encoding="utf-8"):
    t = json.loads(line)["text"]; texts.append(t); size += len(t.encode())
    if size >= float(sys.argv[2]) * 2**20: break
start = psutil.Process().memory_info().rss
train_tokenizer(texts, sys.argv[3] + "/tok", vocab_size=8000)
print(json.dumps({"bytes": size, "delta": peak_rss() - start}))
"""


def run(code: str, *args) -> str:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the cases that need the shared corpora")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from moai_llm.data.footprint import measure_input, memory_need
    from moai_llm.data.sources import resolve_sources
    from moai_llm.tokenizer import train_tokenizer
    from moai_llm.tokenizer.trainer_memory import vocab_table_bytes, words_bytes

    corpora = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
    reviews = corpora / "ko_movie_reviews.jsonl"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = train_tokenizer([f"hello world {i} 가나다라 the quick brown fox" for i in range(300)], tmp / "tok",
                              vocab_size=2000)
        tiny = tmp / "tiny.jsonl"
        tiny.write_text('{"text": "hello world"}\n')
        inputs = [("24-byte input", tiny, [2**16, 2**20, 2**22, 2**23])]
        if reviews.is_file() and not args.quick:
            part = tmp / "reviews20.jsonl"
            with open(reviews, "rb") as src, open(part, "wb") as dst:
                for i, line in enumerate(src):
                    if i >= 146_000:
                        break
                    dst.write(line)
            inputs.append(("Korean reviews, 20 MB", part, [2048, 131072]))
        for label, path, lens in inputs:
            size = measure_input(resolve_sources([str(path)]))
            for seq_len in lens:
                measured = int(run(PREPARE, path, tok, seq_len, tmp / "out"))
                predicted = memory_need(seq_len, size)
                rows.append(("data prepare", f"{label}, --seq-len {seq_len}", predicted, measured))
        for mode, model in (("default", "bpe"), ("ultrafast", "unigram")):
            for vocab in (10**6, 2 * 10**7, 10**8):
                measured = int(run(TABLES, vocab, mode, tmp))
                rows.append(("tokenizer tables (VmPeak)", f"{model}, --vocab-size {vocab:,}",
                             vocab_table_bytes(vocab, model), measured))
        if reviews.is_file() and not args.quick:
            for size_mib in (2, 10, 48):
                result = json.loads(run(WORDS, reviews, size_mib, tmp))
                rows.append(("tokenizer words (RSS)", f"reviews {result['bytes'] / 2**20:.0f} MiB, vocab 8000",
                             words_bytes(result["bytes"]), result["delta"]))
    print("| what | case | predicted MiB | measured MiB | measured ÷ predicted |")
    print("|---|---|---:|---:|---:|")
    for what, case, predicted, measured in rows:
        print(f"| {what} | {case} | {mib(predicted)} | {mib(measured)} | {measured / predicted:.2f} |")


if __name__ == "__main__":
    main()
