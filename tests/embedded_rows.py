"""A tokenizer and packed rows from moai's embedded corpora: real documents for the training
tests and the benchmarks (bench_faults, bench_lora, bench_compile, gpu_check), no ../shared needed."""

from __future__ import annotations

import json
from pathlib import Path


def embedded_rows(root: Path, vocab_size: int, seq_len: int, languages: tuple[str, ...] = ("ko", "en"),
                  show_progress: bool = False) -> tuple[Path, Path]:
    """Train a byte-level BPE tokenizer of `vocab_size` on the embedded corpora's training
    documents of `languages`, write them as root/docs.jsonl and pack them into rows of
    `seq_len` tokens; returns (tokenizer folder, prepared rows folder)."""
    from moai_llm import corpora
    from moai_llm.data import prepare_dataset
    from moai_llm.tokenizer import train_tokenizer

    texts = [t for lang in languages for t in corpora.iter_texts(lang, "train")]
    tok = Path(train_tokenizer(texts, root / "tok", vocab_size=vocab_size,
                                show_progress=show_progress))
    docs = root / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    prepare_dataset([str(docs)], str(tok), seq_len, root / "data")
    return tok, root / "data"
