"""Evaluation files made from the embedded corpora's held-out split (moai_llm/corpora), for
quickstart's table and for trying `moai eval` offline:

- held-out text: the ko/en/ja/zh documents no moai tokenizer or quickstart model trains on
  (`--text`, bits per byte);
- finance multiple choice: every held-out question with its own answer and three answers to other
  held-out questions of the same language and kind (hand-written or computed) as distractors,
  in a seeded order; scored by lm-eval's log-likelihood of each answer (`acc`, `acc_norm`).
- finance generate: the held-out computed questions (interest, fees, instalments, ...), whose answers
  end in a number; scored by exact match of the final number.

Nothing here is hand-written: rerunning the generator gives the same files.

    >>> rows = multiple_choice_rows()
    >>> len(rows), len(rows[0]["choices"]), rows[0]["choices"][rows[0]["answer"]] == rows[0]["reference"]
    (56, 4, True)

    python -m moai_llm.eval.heldout OUT_DIR   # heldout_text.jsonl, finance_mc.jsonl, finance_calc.jsonl
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_jsonl_atomic

SEED = 0
N_CHOICES = 4


def multiple_choice_rows(split: str = "heldout", n_choices: int = N_CHOICES, seed: int = SEED) -> list[dict[str, Any]]:
    """{"question", "choices", "answer" (index), "reference", "lang"} per Q&A of `split`."""
    from moai_llm import corpora

    records = corpora.finance_qa(split)
    rng = random.Random(seed)
    rows = []
    for i, r in enumerate(records):
        pool = [o["output"] for j, o in enumerate(records)
                if j != i and o["lang"] == r["lang"] and o["origin"] == r["origin"] and o["output"] != r["output"]]
        if len(pool) < n_choices - 1:  # too few of the same kind: any other answer of the language
            pool = [o["output"] for j, o in enumerate(records) if j != i and o["lang"] == r["lang"]]
        choices = [r["output"], *rng.sample(sorted(set(pool)), n_choices - 1)]
        rng.shuffle(choices)
        rows.append({"question": r["input"], "choices": choices, "answer": choices.index(r["output"]),
                     "reference": r["output"], "lang": r["lang"]})
    return rows


def generate_rows(split: str = "heldout") -> list[dict[str, Any]]:
    """{"question", "answer", "lang"} for the computed Q&A of `split` (answers end in a number)."""
    from moai_llm import corpora

    return [{"question": r["input"], "answer": r["output"], "lang": r["lang"]}
            for r in corpora.finance_qa(split) if r.get("origin") == "computed"]


def heldout_texts() -> list[str]:
    """The held-out documents of every shipped language (ko, en, ja, zh)."""
    from moai_llm import corpora

    return [text for lang in corpora.languages() for text in corpora.iter_texts(lang, "heldout")]


def write_eval_files(folder: str | Path) -> dict[str, Path]:
    """Write heldout_text.jsonl, finance_mc.jsonl, finance_calc.jsonl and finance_pairs.jsonl
    (the held-out preference pairs: `moai eval --pairs`) into `folder` (atomically); returns
    their paths by kind ("text", "multiple_choice", "generate", "pairs")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    from moai_llm import corpora

    def dump(name: str, rows: list[dict]) -> Path:
        return write_jsonl_atomic(folder / name, rows)

    return {"text": dump("heldout_text.jsonl", [{"text": t} for t in heldout_texts()]),
            "multiple_choice": dump("finance_mc.jsonl", multiple_choice_rows()),
            "generate": dump("finance_calc.jsonl", generate_rows()),
            "pairs": dump("finance_pairs.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                  for r in corpora.finance_pairs("heldout")])}


if __name__ == "__main__":
    if len(sys.argv) != 2:  # no default folder: files dropped into the current one go unnoticed
        sys.exit("usage: python -m moai_llm.eval.heldout OUT_DIR   (e.g. data/evalsets)")
    for kind, path in write_eval_files(sys.argv[1]).items():
        print(f"{kind}: {path}")
