"""Benchmark `moai data prepare` in datatrove tasks: 1 and 2 local workers against the
one-process build it replaced and against `datasets.map(num_proc=2)`, peak RSS per worker as
the input grows 10x, and an extrapolation to a 100B-token corpus on 64-core nodes.

    python benchmarks/bench_prepare_workers.py                   # 500 MB corpus, RSS at 50 and 500 MB
    python benchmarks/bench_prepare_workers.py --size-mb 100 --rss-mb 10 100
    python benchmarks/bench_prepare_workers.py --write           # also write benchmarks/results/prepare_workers.md

The corpus is the Korean movie reviews of ../shared/corpora (or $MOAI_SHARED_CORPORA),
shuffled and repeated to the size asked. Every run is a fresh process (interleaved, best of
`--rounds`), timed from before the call to after it, with the 1-minute load average of the
machine before and after (the 2 cores are shared: a load above ~2 means other jobs took time).
Peak RSS and CPU time are sampled every 0.2 s for every process of the run (psutil); "per
worker" is the largest process that ran tasks. CPU seconds say how much work each pipeline
does whatever the load: on a loaded machine the wall-clock rates are what was left over.

- "one process (before)": the build as it was before tasks, `prepare._build_into` (still the
  path of preference data): a reader thread tokenizing ahead of packing, in one process.
- "moai prepare --workers N": `prepare_dataset(..., executor=Executor(workers=N))`, N local
  processes, tasks = max(N, one per 128 MB).
- "datasets.map(num_proc=2)": `load_dataset("json")`, `.map(tokenizer, batched=True,
  num_proc=2)`, `.map(group_texts, num_proc=2)` (HF run_clm's recipe: rows of seq-len, tail cut).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("MOAI_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
RESULTS = ROOT / "benchmarks" / "results" / "prepare_workers.md"
SEQ_LEN = 2048


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def make_corpus(path: Path, size_mb: float, seed: int = 0) -> None:
    """The reviews, shuffled anew for every repetition, until `size_mb` MB."""
    lines = (CORPORA / "ko_movie_reviews.jsonl").read_bytes().splitlines(keepends=True)
    rng, written = random.Random(seed), 0
    with open(path, "wb") as fh:
        while written < size_mb * 1e6:
            rng.shuffle(lines)
            for line in lines:
                fh.write(line)
                written += len(line)
                if written >= size_mb * 1e6:
                    break


class PeakRss:
    """Peak RSS (MB) of this process and each of its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.me, self.every, self.peaks, self.cpu = psutil.Process(), every, {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss / 1e6
                    times = p.cpu_times()
                except Exception:
                    continue
                self.peaks[p.pid] = max(self.peaks.get(p.pid, 0.0), rss)
                self.cpu[p.pid] = times.user + times.system  # the last sample (misses < 0.2 s per process)
            self.stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def child(kind: str, path: str, tok_dir: str, out: str) -> None:
    from moai_llm.progress import set_quiet

    set_quiet(True)
    with PeakRss() as rss:
        started = time.perf_counter()
        if kind == "before":
            tokens, rows = _before(path, tok_dir, out)
        elif kind.startswith("workers"):
            from moai_llm.data import prepare_dataset
            from moai_llm.data.executors import Executor

            m = prepare_dataset([path], tok_dir, SEQ_LEN, out, executor=Executor(workers=int(kind[7:])))
            tokens, rows = m["num_tokens"], m["num_rows"]
            rss.efficiency, rss.tasks = m["packing_efficiency"], m["tasks"]
        else:
            tokens, rows = _datasets_map(path, tok_dir, out)
        seconds = time.perf_counter() - started
    me = os.getpid()
    workers = [v for pid, v in rss.peaks.items() if pid != me]
    print(json.dumps({"kind": kind, "seconds": seconds, "tokens": tokens, "rows": rows, "cpu_s": sum(rss.cpu.values()),
                      "rss_main_mb": rss.peaks.get(me, 0.0), "rss_worker_mb": max(workers, default=0.0),
                      "efficiency": getattr(rss, "efficiency", None), "tasks": getattr(rss, "tasks", None)}))


def _before(path: str, tok_dir: str, out: str) -> tuple[int, int]:
    """The one-process build (prepare.py's `_build_into`), called as prepare_dataset did."""
    from moai_llm.data import prepare as p
    from moai_llm.data import sources as src_mod
    from moai_llm.data.footprint import measure_input

    srcs = src_mod.resolve_sources([path])
    settings = {"format": p.FORMAT, "seq_len": SEQ_LEN, "mode": "pretrain", "packing": "bfd", "num_bins": None,
                "text_column": None, "mapping": None, "skip_bad_rows": False}
    tok_hash = p.tokenizer_hash(tok_dir)
    m = p._build_into(Path(out), srcs, tok_dir, settings, tok_hash, measure_input(srcs), None, None, False)
    return m["num_tokens"], m["num_rows"]


def _datasets_map(path: str, tok_dir: str, out: str) -> tuple[int, int]:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos = tok.eos_token_id
    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=out + "/cache")

    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}

    def group(batch):
        flat = [t for ids in batch["input_ids"] for t in ids]
        n = len(flat) // SEQ_LEN * SEQ_LEN
        rows = [flat[i:i + SEQ_LEN] for i in range(0, n, SEQ_LEN)]
        return {"input_ids": rows, "labels": [list(r) for r in rows]}

    ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=2)
    tokens = sum(len(x) for x in ds["input_ids"])
    ds = ds.map(group, batched=True, remove_columns=ds.column_names, num_proc=2)
    return tokens, len(ds)


def run_child(kind: str, path: Path, tok_dir: Path, scratch: Path) -> dict:
    out = scratch / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"} | {"OMP_NUM_THREADS": "1"}
    load = loadavg()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(tok_dir), str(out)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    for leftover in scratch.glob(f".out-{kind}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"load_before": load, "load_after": loadavg()}
    print(f"  {kind}: {r['seconds']:.1f} s ({r['cpu_s']:.0f} CPU s), {r['tokens'] / r['seconds'] / 1e3:.1f}k tok/s, RSS main "
          f"{r['rss_main_mb']:.0f} MB, largest worker {r['rss_worker_mb']:.0f} MB, load {load:.2f} -> "
          f"{r['load_after']:.2f}", flush=True)
    return r


NAMES = {"before": "one process (the build before tasks)", "workers1": "moai prepare --workers 1",
         "workers2": "moai prepare --workers 2", "datasets": "datasets.map(num_proc=2) + group_texts"}


def throughput(path: Path, tok_dir: Path, scratch: Path, rounds: int) -> tuple[list[str], dict]:
    runs: dict[str, list[dict]] = {}
    for _ in range(rounds):
        for kind in ("before", "workers2", "workers1", "datasets"):
            runs.setdefault(kind, []).append(run_child(kind, path, tok_dir, scratch))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    base = best["before"]["tokens"] / best["before"]["seconds"]
    lines = ["| pipeline | tasks | seconds | tokens/s | vs one process | CPU seconds (all processes) | packing | "
             "peak RSS main / largest worker | load avg before → after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for kind, r in best.items():
        tps = r["tokens"] / r["seconds"]
        eff = f"{r['efficiency']:.3%}" if r["efficiency"] else "(tail cut)" if kind == "datasets" else "-"
        lines.append(f"| {NAMES[kind]} | {r['tasks'] or '-'} | {r['seconds']:.1f} | {tps / 1e3:.1f}k | {tps / base:.2f}× | "
                     f"{r['cpu_s']:.1f} | {eff} | {r['rss_main_mb']:.0f} / {r['rss_worker_mb']:.0f} MB | {r['load_before']:.2f} → {r['load_after']:.2f} |")
    return lines, best


def packing_by_tasks(tok_dir: Path, scratch: Path) -> list[str]:
    """Packing efficiency of the long-tailed mix of bench_data (reviews + Shakespeare scenes) with
    1, 4 and 16 tasks: each task's tail is packed again with the others' at the merge."""
    import orjson
    from bench_data import read_reviews, shakespeare_scenes

    from moai_llm.data import prepare_dataset
    from moai_llm.data.executors import Executor
    from moai_llm.progress import set_quiet

    texts = read_reviews(60_000) + shakespeare_scenes()
    random.Random(0).shuffle(texts)
    path = scratch / "mix.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))
    lines = ["| seq-len | tasks | documents | tokens | rows | packing |", "|---:|---:|---:|---:|---:|---:|"]
    set_quiet(True)
    for seq_len in (2048, 8192):
        for tasks in (1, 4, 16):
            m = prepare_dataset([str(path)], tok_dir, seq_len, scratch / f"mix-{seq_len}-{tasks}", tasks=tasks,
                                executor=Executor(workers=2))
            lines.append(f"| {seq_len} | {tasks} | {m['num_documents']:,} | {m['num_tokens']:,} | {m['num_rows']:,} | "
                         f"{m['packing_efficiency']:.3%} |")
            print(lines[-1], flush=True)
            shutil.rmtree(scratch / f"mix-{seq_len}-{tasks}")
    set_quiet(False)
    return lines


def extrapolate(best: dict, hash_mb_s: float, bytes_per_token: float) -> list[str]:
    """100B tokens on 1, 4, 16 nodes of 64 cores, from the measured rate per CPU second of the
    2-worker run (all its processes), which the load of other jobs does not change."""
    r = best["workers2"]
    per_core = r["tokens"] / r["cpu_s"]
    wall = r["tokens"] / r["seconds"] / 2
    lines = [f"Measured: {per_core / 1e3:.1f}k tokens per CPU second (`--workers 2`, all its processes; "
             f"{wall / 1e3:.1f}k tokens/s per core of wall-clock time on this shared machine). **Extrapolated**, "
             "assuming one task per core keeps a core busy at that rate and the input is read fast enough:", "",
             "| nodes × 64 cores | tokens/s | 100B tokens take |", "|---:|---:|---:|"]
    for nodes in (1, 4, 16):
        rate = per_core * 64 * nodes
        lines.append(f"| {nodes} × 64 | {rate / 1e6:.1f}M | {1e11 / rate / 3600:.1f} h (extrapolated) |")
    corpus_gb = 1e11 * bytes_per_token / 1e9
    lines += ["", f"Not split over the nodes: the launching process hashes every input file once (the cache's "
              f"fingerprint), in a thread while the tasks run, measured at {hash_mb_s:.0f} MB/s here: for 100B tokens "
              f"of this corpus ({bytes_per_token:.1f} bytes per token, {corpus_gb:,.0f} GB) about "
              f"{corpus_gb * 1e3 / hash_mb_s / 60:.0f} min, so it sets the floor on 16 nodes unless its storage reads "
              "faster (extrapolated); the merge links files and packs the tasks' tails (seconds)."]
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=500)
    parser.add_argument("--rss-mb", type=float, nargs=2, default=(50, 500), help="input sizes of the RSS check")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not (CORPORA / "ko_movie_reviews.jsonl").exists():
        print(f"skipped: the reference corpora are not in {CORPORA} (set MOAI_SHARED_CORPORA)")
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_data import train_bench_tokenizer

    scratch = Path(tempfile.mkdtemp(prefix="moai-bench-workers-"))
    try:
        tok_dir = train_bench_tokenizer(scratch, quick=True)
        path = scratch / "corpus.jsonl"
        make_corpus(path, args.size_mb)
        print(f"throughput on {path.stat().st_size / 1e6:.0f} MB, seq-len {SEQ_LEN}", flush=True)
        table, best = throughput(path, tok_dir, scratch, args.rounds)
        from moai_llm.data.sources import full_hash

        started = time.perf_counter()
        full_hash(path)
        hash_mb_s = path.stat().st_size / 1e6 / (time.perf_counter() - started)
        bytes_per_token = path.stat().st_size / best["workers2"]["tokens"]
        rss = []
        for size in args.rss_mb:
            make_corpus(path, size, seed=1)
            rss.append((path.stat().st_size / 1e6, run_child("workers2", path, tok_dir, scratch)))
        lines = ["# moai data prepare in datatrove tasks", "",
                 f"Command: `python benchmarks/bench_prepare_workers.py --size-mb {args.size_mb:g} --rss-mb "
                 f"{args.rss_mb[0]:g} {args.rss_mb[1]:g}`  ",
                 f"Machine: {os.cpu_count()} cores visible, shared with other jobs; "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
                 f"Corpus: Korean movie reviews shuffled and repeated to {args.size_mb:g} MB, tokenizer vocab 8000, "
                 f"seq-len {SEQ_LEN}", "", *table, "",
                 "Peak RSS per worker as the input grows (`--workers 2`):", "",
                 "| input | tasks | tokens | peak RSS main / largest worker | load avg before → after |", "|---:|---:|---:|---:|---|"]
        for size, r in rss:
            lines.append(f"| {size:.0f} MB | {r['tasks']} | {r['tokens']:,} | {r['rss_main_mb']:.0f} / {r['rss_worker_mb']:.0f} MB | "
                         f"{r['load_before']:.2f} → {r['load_after']:.2f} |")
        lines += ["", *extrapolate(best, hash_mb_s, bytes_per_token), "",
                  "Packing with more tasks, on bench_data's long-tailed mix (60k reviews + Shakespeare scenes):", "",
                  *packing_by_tasks(tok_dir, scratch), ""]
        print("\n".join(lines))
        if args.write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text("\n".join(lines) + "\n")
            print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
