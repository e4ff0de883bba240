"""Small default corpora written by the moai project itself (ko/en/ja/zh text, finance Q&A).

They let `moai quickstart`, the tests and the docs run offline on a fresh machine: a tokenizer
can be trained, a tiny model pretrained until its loss falls, and SFT run on finance Q&A without
downloading anything. Files are read lazily with orjson; importing this module does no work.

    >>> from moai_llm import corpora
    >>> corpora.languages()
    ['ko', 'en', 'ja', 'zh']
    >>> text = next(corpora.iter_texts("ko"))
    >>> qa = corpora.finance_qa(split="heldout")  # [{"input": ..., "output": ..., "lang": ...}]

Splits are deterministic: document i (0-based line number in the file) is held out when
`i % HELDOUT_EVERY == HELDOUT_EVERY - 1`, i.e. every 10th document; the rest is "train".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

CORPORA_DIR = Path(__file__).resolve().parent
LANGUAGES = ("ko", "en", "ja", "zh")
SPLITS = ("train", "heldout", "all")
HELDOUT_EVERY = 10
FINANCE_QA = "finance_qa.jsonl"
FINANCE_PAIRS = "finance_pairs.jsonl"


def write_records(file: Path, records: list[dict]) -> None:
    """Write a corpus file atomically: a temp file in the same folder, then os.replace (the
    generators in build.py and preference_set.py)."""
    import os

    tmp = file.with_suffix(".jsonl.tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    os.replace(tmp, file)


def languages() -> list[str]:
    """Languages with a shipped text corpus: `corpora.languages() -> ['ko', 'en', 'ja', 'zh']`."""
    return list(LANGUAGES)


def path(name: str) -> Path:
    """Path of a shipped file: `corpora.path("ko")` or `corpora.path("finance_qa.jsonl")`.

    A bare language code or "finance_qa" gets its `.jsonl` suffix added.
    """
    file_name = name if name.endswith(".jsonl") else f"{name}.jsonl"
    p = CORPORA_DIR / file_name
    if not p.is_file():
        shipped = sorted(f.name for f in CORPORA_DIR.glob("*.jsonl"))
        raise ValueError(f"no shipped corpus file {name!r}; shipped files: {', '.join(shipped)}")
    return p


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


def _in_split(index: int, split: str) -> bool:
    held = index % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return split == "all" or (split == "heldout") == held


def iter_records(name: str, split: str = "all") -> Iterator[dict]:
    """Records (parsed JSON lines) of a shipped file in a split: `iter_records("en", "train")`."""
    _check_split(split)
    with path(name).open("rb") as f:
        for index, line in enumerate(f):
            if _in_split(index, split):
                yield orjson.loads(line)


def iter_texts(lang: str, split: str = "train") -> Iterator[str]:
    """Documents of one language: `for doc in corpora.iter_texts("ja", split="heldout"): ...`.

    Raises ValueError for a language other than ko/en/ja/zh or an unknown split.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unknown corpus language {lang!r}; use one of: {', '.join(LANGUAGES)}")
    _check_split(split)
    for record in iter_records(lang, split):
        yield record["text"]


def finance_qa(split: str = "train", lang: str | None = None) -> list[dict]:
    """Finance Q&A records `{"input", "output", "lang", ...}`: `corpora.finance_qa("heldout")`.

    `lang` ("ko" or "en") keeps one language. Computed records also carry a "calc" dict with the
    numbers their answer was derived from.
    """
    if lang is not None and lang not in ("ko", "en"):
        raise ValueError(f"finance Q&A is shipped in 'ko' and 'en', not {lang!r}")
    records = list(iter_records(FINANCE_QA, split))
    if lang is not None:
        records = [r for r in records if r["lang"] == lang]
    return records


def finance_pairs(split: str = "train", lang: str | None = None) -> list[dict]:
    """Finance preference pairs `{"prompt", "chosen", "rejected", "lang", "rejected_from"}`, one per
    finance Q&A record on the same line, so `finance_pairs("heldout")` pairs the held-out questions
    (see preference_set.py for how the wrong answers are made)."""
    if lang is not None and lang not in ("ko", "en"):
        raise ValueError(f"finance pairs are shipped in 'ko' and 'en', not {lang!r}")
    return [r for r in iter_records(FINANCE_PAIRS, split) if lang is None or r["lang"] == lang]


__all__ = ["HELDOUT_EVERY", "finance_pairs", "finance_qa", "iter_records", "iter_texts", "languages", "path"]
