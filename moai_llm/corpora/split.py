"""The embedded corpora's train split as files, for commands that read files (`moai data prepare
--input`, `moai tokenizer train --input`): the README's whole path trains on these and evaluates
on the held-out split (`python -m moai_llm.eval.heldout`), as `moai quickstart` does. The split
is the corpora's own (`moai_llm.corpora`: every 10th line held out); nothing here decides again.

    python -m moai_llm.corpora.split data/corpora   # data/corpora/{ko,en,ja,zh,finance_qa,finance_pairs}.jsonl

    >>> import tempfile
    >>> files = write_train_split(tempfile.mkdtemp())
    >>> sorted(files), sum(1 for _ in files["finance_qa"].open())
    (['en', 'finance_pairs', 'finance_qa', 'ja', 'ko', 'zh'], 508)
"""

from __future__ import annotations

import sys
from pathlib import Path

from moai_llm import corpora
from moai_llm.atomic import write_jsonl_atomic


def write_train_split(folder: str | Path) -> dict[str, Path]:
    """Write the train split of each language ({"text"} per line), of the finance Q&A
    ({"input", "output"}, the schema `data prepare --mode sft` reads) and of the finance
    preference pairs ({"prompt", "chosen", "rejected"}: `moai dpo`) into `folder`, atomically;
    returns the paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {lang: write_jsonl_atomic(folder / f"{lang}.jsonl", ({"text": t} for t in corpora.iter_texts(lang, "train")))
             for lang in corpora.languages()}
    files["finance_qa"] = write_jsonl_atomic(
        folder / "finance_qa.jsonl", ({"input": r["input"], "output": r["output"]} for r in corpora.finance_qa("train")))
    files["finance_pairs"] = write_jsonl_atomic(
        folder / "finance_pairs.jsonl",
        ({k: r[k] for k in ("prompt", "chosen", "rejected")} for r in corpora.finance_pairs("train")))
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m moai_llm.corpora.split OUT_DIR")
    for name, path in write_train_split(sys.argv[1]).items():
        print(f"{name}: {path} ({sum(1 for _ in path.open(encoding='utf-8'))} lines)")
