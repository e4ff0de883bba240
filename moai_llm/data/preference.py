"""Preference pairs to packed rows: `moai data prepare --mode preference`.

Each pair (pairs.py) is rendered twice with the model's own chat template, prompt + chosen and
prompt + rejected, and the loss positions are the answer tokens after the prompt only, found
exactly as for SFT (sft.py: template-driven spans, `--thinking`). Both sequences of a pair are
one packing unit, so a pair never straddles two rows and any micro-batch holds whole pairs;
many pairs share a row with document boundaries (position_ids restart per sequence), without
padding between them.

Truncation follows TRL's DPO collator: every sequence is cut to `max_length = seq_len // 2`
tokens (so that a pair always fits a row), keeping its first tokens (`keep_start`) or its last
(`keep_end`); a pair left with no answer token in a sequence is dropped. Both are counted.

A prepared preference dataset is the usual folder (store.py) with two more list columns per
row, one entry per document in row order:

    pair_index  int32  the pair's number in the dataset (0 .. num_pairs - 1)
    pair_role   int32  0 = chosen, 1 = rejected

so row r's k-th document (the k-th run of position_ids starting at 0) is
`(pair_index[r][k], pair_role[r][k])`; a row's padding tail, when there is one, is the
segment after its last document. The manifest's "preference" entry holds num_pairs,
max_length, truncation and the truncation counts.

    >>> rows = list(build_pair_rows([[PairDoc(np.array([5, 6, 7, 8], np.int32), np.array([-100, -100, 7, 8], np.int32),
    ...                                        0, chosen_len=2, pair=3)]], 6, pad_id=0))
    >>> ids, labels, pos, pairs, roles = rows[0]
    >>> pos.tolist(), pairs.tolist(), roles.tolist()
    ([0, 1, 0, 1, 0, 1], [3, 3], [0, 1])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from moai_llm.data.packing import Doc
from moai_llm.errors import MoaiInputError

TRUNCATIONS = ("keep_start", "keep_end")
EXTRA_COLUMNS = ("pair_index", "pair_role")
CHOSEN, REJECTED = 0, 1


@dataclass
class PairDoc(Doc):
    """A packing unit: a pair's chosen sequence (the first `chosen_len` tokens), then its rejected one."""

    chosen_len: int = 0
    pair: int = 0


class PairStats:
    """Counts of a preference build: pairs kept, truncated, dropped."""

    columns = EXTRA_COLUMNS

    def __init__(self, max_length: int, truncation: str):
        self.max_length = max_length
        self.truncation = truncation
        self.pairs = self.truncated = self.dropped = self.tokens_dropped = 0
        self.first_truncated: str | None = None

    def manifest(self) -> dict:
        return {"num_pairs": self.pairs, "max_length": self.max_length, "truncation": self.truncation,
                "pairs_truncated": self.truncated, "pairs_dropped": self.dropped,
                "tokens_dropped": self.tokens_dropped, "first_truncated": self.first_truncated,
                "columns": list(EXTRA_COLUMNS), "roles": {"chosen": CHOSEN, "rejected": REJECTED}}

    def report(self, seq_len: int) -> None:
        """Say how many pairs were cut or dropped, as the SFT build does for conversations."""
        if not self.truncated and not self.dropped:
            return
        from moai_llm.progress import warn

        kept = "first" if self.truncation == "keep_start" else "last"
        warn(f"{self.truncated:,} pairs have a sequence longer than {self.max_length} tokens (half a row of "
             f"{seq_len}; first: {self.first_truncated}): each such sequence keeps its {kept} {self.max_length} "
             f"tokens ({self.tokens_dropped:,} tokens dropped in all, as TRL's {self.truncation}); {self.dropped:,} "
             f"pairs dropped (no answer token left). A larger --seq-len keeps them whole")


def check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise MoaiInputError(f"--truncation {truncation}: unknown value", hint="use keep_start or keep_end")


def render_pair(template, pair) -> tuple[tuple[str, list], tuple[str, list]]:
    """(text, loss spans) of prompt + chosen and of prompt + rejected: answers after the prompt only."""
    from moai_llm.data.sft import render

    out = []
    for answer in (pair.chosen, pair.rejected):
        messages = [*pair.prompt, *answer]
        text, spans = render(template, messages)
        # render() gives one span per non-empty assistant message; the prompt's own come first
        shown = template.prepare(messages)[:len(pair.prompt)]
        skip = sum(1 for m in shown if m["role"] == "assistant" and m["content"])
        out.append((text, spans[skip:]))
    return out[0], out[1]


def truncate(ids: np.ndarray, labels: np.ndarray, max_length: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """TRL's per-sequence truncation, and no loss on a sequence's first token (nothing predicts it).

    >>> truncate(np.arange(6), np.arange(6), 4, "keep_end")[1].tolist()
    [-100, 3, 4, 5]
    """
    if len(ids) > max_length:
        cut = slice(None, max_length) if mode == "keep_start" else slice(len(ids) - max_length, None)
        ids, labels = ids[cut], labels[cut]
    labels = labels.copy()
    labels[0] = -100
    return ids, labels


def preference_docs(source, index, bad, encoder, template, mapping, stats, pair_stats: PairStats) -> Iterator[list[PairDoc]]:
    """One source's records as PairDocs, in batches; pair numbers continue across sources."""
    from moai_llm.data.documents import batches
    from moai_llm.data.pairs import to_pair

    state = {"seen": False}

    def pick(record, where):
        try:
            pair = to_pair(record, mapping, where)
            rendered = render_pair(template, pair)
        except MoaiInputError as exc:
            if not state["seen"]:  # the first record decides the schema: a mismatch is not one bad row
                raise exc from None
            bad.bad(where, str(exc).split(": ", 1)[-1])
            return None
        state["seen"] = True
        return (*rendered, where)

    for batch in batches(source, bad, pick):
        texts = [t for chosen, rejected, _ in batch for t in (chosen[0], rejected[0])]
        spans = [s for chosen, rejected, _ in batch for s in (chosen[1], rejected[1])]
        encoded = encoder.with_loss_spans(texts, spans)
        docs = []
        for k, (_, _, where) in enumerate(batch):
            doc = _unit(encoded[2 * k], encoded[2 * k + 1], index, where, pair_stats)
            if doc is not None:
                docs.append(doc)
        stats.tokens_dropped = pair_stats.tokens_dropped  # the manifest's and the summary's count
        yield docs


def _unit(chosen, rejected, index: int, where: str, ps: PairStats) -> PairDoc | None:
    longest = max(len(chosen[0]), len(rejected[0]))
    if longest > ps.max_length:
        ps.truncated += 1
        ps.first_truncated = ps.first_truncated or f"{where} ({longest} tokens)"
        ps.tokens_dropped += max(0, len(chosen[0]) - ps.max_length) + max(0, len(rejected[0]) - ps.max_length)
    c_ids, c_labels = truncate(*chosen, ps.max_length, ps.truncation)
    r_ids, r_labels = truncate(*rejected, ps.max_length, ps.truncation)
    if (c_labels == -100).all() or (r_labels == -100).all():
        ps.dropped += 1  # the prompt fills max_length: no answer token left to compare
        return None
    doc = PairDoc(np.concatenate([c_ids, r_ids]), np.concatenate([c_labels, r_labels]), index,
                  chosen_len=len(c_ids), pair=ps.pairs)
    ps.pairs += 1
    return doc


def build_pair_rows(rows: list[list[PairDoc]], capacity: int, pad_id: int
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(input_ids, labels, position_ids, pair_index, pair_role) per packed row: position ids
    restart at each pair's chosen and rejected sequence; the padding tail is its own segment."""
    for row in rows:
        ids = np.full(capacity, pad_id, dtype=np.int32)
        labels = np.full(capacity, -100, dtype=np.int32)
        pos = np.empty(capacity, dtype=np.int32)
        pairs, roles = [], []
        at = 0
        for doc in row:
            n = len(doc.ids)
            ids[at:at + n] = doc.ids
            labels[at:at + n] = doc.labels
            c = doc.chosen_len
            pos[at:at + c] = np.arange(c, dtype=np.int32)
            pos[at + c:at + n] = np.arange(n - c, dtype=np.int32)
            pairs += [doc.pair, doc.pair]
            roles += [CHOSEN, REJECTED]
            at += n
        pos[at:] = np.arange(capacity - at, dtype=np.int32)
        yield ids, labels, pos, np.asarray(pairs, np.int32), np.asarray(roles, np.int32)

