"""`moai export` measured: file size, export time, and bits per byte of held-out text in llama.cpp.

Exports one trained model (by default the SFT model of a fresh `moai quickstart`, trained
here) to f16, q8_0, q4_k_m and q5_k_m, then scores held-out documents (the embedded ko/en/ja/zh
corpora's held-out split, never trained on) with llama.cpp (llama-cpp-python, f32 KV cache) and
with the transformers model in f32, on the same token ids and windows: each document is
`[<|endoftext|>] + tokens`, cut into disjoint windows of the model's context, every token scored
once. Bits per byte = summed negative log-likelihood / (ln 2 x UTF-8 bytes). Goal: f16 within
0.1% of transformers, q8_0 within 0.5%. Before scoring, llama.cpp's tokenization of every
document is checked equal to transformers'.

    python benchmarks/bench_export.py                      # trains a quickstart model first (minutes)
    python benchmarks/bench_export.py --model moai-quickstart/sft
    python benchmarks/bench_export.py --quick              # 10 documents per language

Needs llama-cpp-python (`pip install 'moai[llamacpp]'`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
QUANTS = ["f16", "q8_0", "q4_k_m", "q5_k_m"]


def documents(per_language: int | None) -> list[str]:
    from moai_llm import corpora

    return [d for lang in corpora.languages()
            for d in itertools.islice(corpora.iter_texts(lang, "heldout"), per_language)]


def nll(logits: np.ndarray, targets: list[int]) -> float:
    """Summed negative log-likelihood (nats) of `targets` under `logits` (one row per target)."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())


def windows_of(ids: list[int], ctx: int) -> list[tuple[int, int, int]]:
    from moai_llm.eval.text import windows

    return list(windows(len(ids) - 1, seq_len=ctx, stride=ctx - 1))


def bits_per_byte(score, docs: list[str], encoded: list[list[int]], ctx: int) -> float:
    """`score(window ids) -> logits` over every document's windows; bits per byte."""
    total = 0.0
    for ids in encoded:
        for start, end, first in windows_of(ids, ctx):
            logits = score(ids[start:end])
            total += nll(logits[first - start - 1: end - start - 1], ids[first:end])
    return total / (math.log(2) * sum(len(d.encode("utf-8")) for d in docs))


def transformers_bpb(model_dir: Path, docs: list[str], encoded: list[list[int]], ctx: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def score(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()
    return bits_per_byte(score, docs, encoded, ctx)


def llama_bpb(gguf: Path, docs: list[str], encoded: list[list[int]], ctx: int, threads: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=ctx, n_batch=ctx, n_threads=threads, logits_all=True,
                          verbose=False, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    for doc, ids in zip(docs, encoded, strict=True):  # the ids scored must be llama.cpp's own
        assert llm.tokenize(doc.encode("utf-8"), add_bos=False, special=False) == ids[1:], doc[:60]

    def score(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    return bits_per_byte(score, docs, encoded, ctx)


def chat_check(model_dir: Path, gguf: Path, question: str, threads: int) -> tuple[bool, bool]:
    """(llama.cpp's greedy chat answer through the GGUF's own template equals transformers',
    llama.cpp stopped on an end token): 64 new tokens at most."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": question}]
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    stops = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    plain = GenerationConfig(max_new_tokens=64, do_sample=False, repetition_penalty=1.0, eos_token_id=stops,
                             pad_token_id=stops[0])
    with torch.no_grad():  # plain greedy: transformers would merge in the folder's repetition penalty
        out = model.generate(torch.tensor([ids]), generation_config=plain)[0, len(ids):].tolist()
    want = tok.decode([t for t in out if t not in stops])
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    answer = llm.create_chat_completion(messages=messages, temperature=0, max_tokens=64)["choices"][0]
    # llama-cpp-python drops bytes that do not complete a character; transformers shows U+FFFD
    same = answer["message"]["content"].replace("\ufffd", "") == want.replace("\ufffd", "")
    return same, answer["finish_reason"] == "stop"


def quickstart_model(work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "moai_cli", "quickstart", "--output-dir", str(work / "qs")],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return work / "qs" / "sft"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model or run folder (default: train a quickstart model)")
    parser.add_argument("--quick", action="store_true", help="10 held-out documents per language")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from transformers import AutoConfig, AutoTokenizer

    from moai_llm.export.run import export_model
    from moai_llm.inference.loading import resolve_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = Path(args.model) if args.model else quickstart_model(work)
        model_dir, _ = resolve_model_dir(model)
        tok = AutoTokenizer.from_pretrained(model_dir)
        ctx = min(int(AutoConfig.from_pretrained(model_dir).max_position_embeddings), 512)
        docs = documents(10 if args.quick else None)
        sep = tok.convert_tokens_to_ids("<|endoftext|>")
        encoded = [[sep, *tok(d, add_special_tokens=False)["input_ids"]] for d in docs]
        print(f"model {model_dir}; {len(docs)} held-out documents, {sum(len(d.encode()) for d in docs):,} bytes, "
              f"{sum(map(len, encoded)):,} tokens; windows of {ctx}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, llama.cpp threads {args.threads}")
        from moai_llm import corpora

        question = corpora.finance_qa("heldout")[0]["input"]
        reference = transformers_bpb(model_dir, docs, encoded, ctx)
        rows = [("transformers (f32)", "-", "-", reference, 0.0, "-")]
        for quant in QUANTS:
            start = time.perf_counter()
            out = export_model(model, work / f"m-{quant}.gguf", quant=quant).output
            seconds = time.perf_counter() - start
            bpb = llama_bpb(out, docs, encoded, ctx, args.threads)
            same, stopped = chat_check(model_dir, out, question, args.threads)
            chat = f"{'same' if same else 'differs'}, {'stopped' if stopped else 'did not stop'}"
            rows.append((f"llama.cpp {quant}", f"{out.stat().st_size / 2**20:.2f}", f"{seconds:.1f}", bpb,
                         100 * (bpb - reference) / reference, chat))
        print("chat: llama.cpp's greedy answer (chat template in the GGUF, 64 tokens at most) to a held-out "
              f"finance question vs transformers', and whether it stopped on <|im_end|>: {question[:50]!r}")
        print("| model | file MiB | export s | bits per byte | vs transformers | chat answer |")
        print("|---|---:|---:|---:|---:|---|")
        for name, size, seconds, bpb, delta, chat in rows:
            print(f"| {name} | {size} | {seconds} | {bpb:.4f} | {delta:+.3f}% | {chat} |")


if __name__ == "__main__":
    main()
