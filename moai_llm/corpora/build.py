"""Maintainer tool that (re)builds the shipped corpora files; users never need to run it.

The shipped `{ko,en,ja,zh}.jsonl` and `finance_qa.jsonl` hold two kinds of records, marked by
an "origin" field: prose and Q&A the project wrote by hand ("written"), and records generated
from templates with computed numbers ("generated" text, "computed" Q&A). `add-*` appends
hand-written material from plain-text drafts; `generate` replaces the generated records (same
seed, same output) and keeps the written ones in order. Written records come first in each file.

    python -m moai_llm.corpora.build add-text ko draft.txt   # documents separated by '---' lines
    python -m moai_llm.corpora.build add-qa en qa.txt        # 'Q: ...' / 'A: ...' blocks
    python -m moai_llm.corpora.build generate
    python -m moai_llm.corpora.build stats
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import orjson

from moai_llm.corpora import CORPORA_DIR, FINANCE_QA, LANGUAGES, write_records
from moai_llm.corpora.calc_qa import computed_qa

GENERATED = ("generated", "computed")


def read_records(file: Path) -> list[dict]:
    if not file.exists():
        return []
    return [orjson.loads(line) for line in file.read_bytes().splitlines() if line.strip()]


def clean(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def parse_documents(draft: str) -> list[str]:
    """Documents separated by lines of '---'; within one, non-empty lines become paragraphs."""
    docs = []
    for block in draft.split("\n---"):
        lines = [clean(line) for line in block.strip("-\n").splitlines()]
        text = "\n".join(line for line in lines if line)
        if text:
            docs.append(text)
    return docs


def parse_qa(draft: str) -> list[tuple[str, str]]:
    """Blocks of 'Q: question' then 'A: answer' lines (an answer may continue on later lines)."""
    pairs, question, answer = [], None, None
    for raw in draft.splitlines() + ["Q:"]:
        line = clean(raw)
        if line.startswith("Q:"):
            if question and answer:
                pairs.append((question, answer))
            question, answer = line[2:].strip(), None
        elif line.startswith("A:"):
            answer = line[2:].strip()
        elif line and answer is not None:
            answer += " " + line
    return pairs


def merge_written(file: Path, new: list[dict], key: str) -> int:
    """Insert new written records after the existing written ones, skipping duplicates."""
    records = read_records(file)
    written = [r for r in records if r.get("origin") not in GENERATED]
    generated = [r for r in records if r.get("origin") in GENERATED]
    seen = {r[key] for r in records}
    added = [r for r in new if r[key] not in seen and not seen.add(r[key])]
    write_records(file, written + added + generated)
    return len(added)


def add_text(lang: str, drafts: list[Path]) -> None:
    docs = [d for p in drafts for d in parse_documents(p.read_text(encoding="utf-8"))]
    n = merge_written(CORPORA_DIR / f"{lang}.jsonl", [{"text": d, "origin": "written"} for d in docs], "text")
    print(f"{lang}: added {n} of {len(docs)} documents")


def add_qa(lang: str, drafts: list[Path]) -> None:
    pairs = [qa for p in drafts for qa in parse_qa(p.read_text(encoding="utf-8"))]
    new = [{"input": q, "output": a, "lang": lang, "origin": "written"} for q, a in pairs]
    n = merge_written(CORPORA_DIR / FINANCE_QA, new, "input")
    print(f"finance_qa/{lang}: added {n} of {len(pairs)} records")


def generate(seed: int = 0) -> None:
    from moai_llm.corpora.text_templates import generated_texts

    for lang in LANGUAGES:
        file = CORPORA_DIR / f"{lang}.jsonl"
        written = [r for r in read_records(file) if r.get("origin") not in GENERATED]
        docs = generated_texts(lang, seed=seed)
        write_records(file, written + [{"text": clean(d), "origin": "generated"} for d in docs])
    file = CORPORA_DIR / FINANCE_QA
    written = [r for r in read_records(file) if r.get("origin") not in GENERATED]
    computed = computed_qa(seed=seed, per_kind=20)
    for r in computed:
        r["input"], r["output"] = clean(r["input"]), clean(r["output"])
    write_records(file, written + computed)
    from moai_llm.corpora.preference_set import write as write_pairs

    write_pairs(seed)  # preference pairs follow the Q&A line by line
    stats()


def stats() -> None:
    for file in sorted(CORPORA_DIR.glob("*.jsonl")):
        records = read_records(file)
        kinds: dict[str, int] = {}
        for r in records:
            kinds[r.get("origin", "?")] = kinds.get(r.get("origin", "?"), 0) + 1
        size = sum(len(r.get("text", r.get("input", "") + r.get("output", "")).encode()) for r in records)
        written = sum(len(r.get("text", r.get("input", "") + r.get("output", "")).encode())
                      for r in records if r.get("origin") not in GENERATED)
        print(f"{file.name:18} {file.stat().st_size / 1024:7.1f} KiB file  {len(records):5} records "
              f"{kinds}  text {size / 1024:.1f} KiB, written {written / 1024:.1f} KiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m moai_llm.corpora.build", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("add-text", "add-qa"):
        p = sub.add_parser(name)
        p.add_argument("lang", choices=LANGUAGES if name == "add-text" else ("ko", "en"))
        p.add_argument("drafts", nargs="+", type=Path)
    sub.add_parser("generate").add_argument("--seed", type=int, default=0)
    sub.add_parser("stats")
    args = parser.parse_args(argv)
    if args.cmd == "add-text":
        add_text(args.lang, args.drafts)
    elif args.cmd == "add-qa":
        add_qa(args.lang, args.drafts)
    elif args.cmd == "generate":
        generate(args.seed)
    else:
        stats()


if __name__ == "__main__":
    sys.exit(main())
