"""Finance preference pairs written by the project: `finance_pairs.jsonl`, from `finance_qa.jsonl`.

One pair per Q&A record, on the same line number, so the corpora's split rule (every 10th line
held out) holds out the pairs of the held-out questions: the quickstart's SFT never trains on
them, and DPO on the train pairs can be checked on pairs it has not seen.

    {"prompt": question, "chosen": the reference answer, "rejected": a plausible wrong answer,
     "lang": "ko" | "en", "rejected_from": "perturbed" | "other_answer"}

The wrong answer is
- for a computed question (its record carries "calc"): the same worked answer with the result
  replaced by a perturbed one (x0.5, x0.9, x1.1, x1.5 or x2, seeded per line, rounded as the
  currency is): the working is right, the number is not;
- for a hand-written question: the answer of another hand-written question in the same language
  and the same split, the one whose words overlap most with this question and answer (on topic,
  but not the answer). The same split: a held-out pair's two answers are both unseen in training
  (neither SFT on the train Q&A nor DPO on the train pairs has met them), and no held-out
  answer appears in a train pair. Drawn from all questions, a held-out pair's wrong answer would
  be a trained one, which any trained model prefers for having memorised it.

Regenerate (deterministic, also run by `python -m moai_llm.corpora.build generate`):

    python -m moai_llm.corpora.preference_set

    >>> pairs = preference_pairs(list(__import__("moai_llm.corpora", fromlist=["x"]).iter_records("finance_qa")))
    >>> sorted(pairs[0])
    ['chosen', 'lang', 'prompt', 'rejected', 'rejected_from']
"""

from __future__ import annotations

import random
import re
from decimal import Decimal

from moai_llm.corpora import _in_split
from moai_llm.corpora.calc_qa import fmt, money

PAIRS_FILE = "finance_pairs.jsonl"
FACTORS = (Decimal("0.5"), Decimal("0.9"), Decimal("1.1"), Decimal("1.5"), Decimal("2"))


def _words(text: str) -> set[str]:
    """Words and, for Korean, two-syllable pieces: enough to tell what a text is about."""
    tokens = re.findall(r"\w+", text.lower())
    return set(tokens) | {t[i:i + 2] for t in tokens for i in range(len(t) - 1) if not t.isascii()}


def perturbed_answer(record: dict, seed: int) -> str | None:
    """The record's answer with its result replaced by a wrong one, or None when the result is
    not written in the answer as the generator formats it."""
    calc = record["calc"]
    currency = calc["currency"]
    result = Decimal(str(calc["result"]))
    shown = fmt(money(result, currency), currency, record["lang"])
    if shown not in record["output"]:
        return None
    rng = random.Random(seed)
    for factor in rng.sample(FACTORS, len(FACTORS)):
        wrong = fmt(money(result * factor, currency), currency, record["lang"])
        if wrong != shown and wrong not in record["output"]:
            return record["output"].replace(shown, wrong)
    return None


def preference_pairs(records: list[dict], seed: int = 0) -> list[dict]:
    """A pair per Q&A record, in the same order (see the module docstring)."""
    written = [(i, r, _words(r["input"] + " " + r["output"])) for i, r in enumerate(records) if "calc" not in r]
    pairs = []
    for i, record in enumerate(records):
        rejected, origin = (perturbed_answer(record, seed * 100_003 + i), "perturbed") if "calc" in record else (None, "")
        if rejected is None:
            words = _words(record["input"] + " " + record["output"])
            split = "heldout" if _in_split(i, "heldout") else "train"
            others = [(len(words & w) / len(words | w), -j, r["output"]) for j, r, w in written
                      if j != i and r["lang"] == record["lang"] and r["output"] != record["output"]
                      and _in_split(j, split)]
            rejected, origin = max(others)[2], "other_answer"
        pairs.append({"prompt": record["input"], "chosen": record["output"], "rejected": rejected,
                      "lang": record["lang"], "rejected_from": origin})
    return pairs


def write(seed: int = 0) -> int:
    """Rebuild finance_pairs.jsonl from the shipped finance_qa.jsonl; returns the number of pairs."""
    from moai_llm.corpora import CORPORA_DIR, iter_records, write_records

    pairs = preference_pairs(list(iter_records("finance_qa")), seed)
    write_records(CORPORA_DIR / PAIRS_FILE, pairs)
    return len(pairs)


if __name__ == "__main__":
    print(f"{PAIRS_FILE}: {write()} pairs")
