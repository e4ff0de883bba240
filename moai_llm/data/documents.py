"""Records to token documents: pretraining text, SFT conversations with loss spans, weights.

`pretrain_docs` and `sft_docs` turn one source's records into batches of `Doc` (int32 ids,
labels for SFT), counting what they skip or cut in `Stats`; a prepare task runs their halves,
reading (`pretrain_texts`, `sft_items`) and tokenizing, as steps of its pipeline (pipeline.py). `prefetched` runs such a generator
in a thread a few batches ahead, so reading and tokenizing overlap with packing and writing.

An SFT conversation never splits across rows: one longer than a row keeps its first `seq_len`
tokens (counted, with the first place it happened), and is dropped whole (counted) when no
answer token is left in that head.

    >>> stats = Stats(n_sources=1, seq_len=8)
    >>> stats.document(0, 5); stats.docs, stats.tokens
    ([1], [5])
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from moai_llm.data import sources as src_mod
from moai_llm.data.packing import Doc
from moai_llm.errors import MoaiInputError

BATCH_DOCS = 2048  # documents per tokenizer call: big enough for every core, small for memory


class Stats:
    """Counts of one build: per-source documents and tokens, lengths, what was cut or skipped."""

    def __init__(self, n_sources: int, seq_len: int):
        self.seq_len = seq_len
        self.docs = [0] * n_sources
        self.tokens = [0] * n_sources
        self.histogram: dict[int, int] = {}
        self.docs_split = self.tokens_cut = self.tokens_dropped = self.dropped_docs = self.empty = 0
        self.rows_out = self.tokens_out = 0  # rows handed to the writer, and the tokens in them
        self.truncated = 0  # SFT conversations longer than a row
        self.first_truncated: str | None = None

    def document(self, source: int, n: int) -> None:
        self.docs[source] += 1
        self.tokens[source] += n
        bucket = 1 << max(0, (n - 1).bit_length())  # upper bound of a power-of-two bucket
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1


def batches(source: src_mod.Source, bad: src_mod.BadRows, pick, records=None) -> Iterator[list]:
    """Items chosen by `pick(record, where)` in batches, with the source's weight applied.

    `records()` gives the (record, where) pairs to read in each pass (default: the whole source;
    a prepare task passes its share of it).
    """
    passes = max(1, int(-(-source.weight // 1)))
    for p in range(passes):
        fraction = min(1.0, source.weight - p)
        batch = []
        for record, where in (records() if records else src_mod.iter_records(source, bad)):
            if fraction < 1.0 and not kept(record, fraction):
                continue
            item = pick(record, where)
            if item is not None:
                batch.append(item)
                if len(batch) >= BATCH_DOCS:
                    yield batch
                    batch = []
        if batch:
            yield batch


def kept(record: dict, fraction: float) -> bool:
    """Whether a fractional weight keeps `record`: decided by a hash of its content, so the same
    records are kept whichever task reads them and wherever the file lies."""
    import zlib

    import orjson

    raw = orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
    return zlib.crc32(raw) / 2**32 < fraction


def pretrain_texts(source, bad, text_column, stats, records=None, decided: str | None = None) -> Iterator[list[str]]:
    """Batches of document texts; `decided`: the text column already chosen (from the source's
    first record), else the first record read chooses it."""
    column: list[str] = [decided] if decided else []

    def pick(record, where):
        if not column:
            column.append(src_mod.text_column(record, where, text_column))
        text = record.get(column[0])
        if column[0] not in record:  # absent, not null: say so, and what is there
            bad.bad(where, f"no column '{column[0]}'; columns found: {', '.join(map(str, record)) or '(none)'}")
            return None
        if not isinstance(text, str):
            bad.bad(where, src_mod.not_text(column[0], text))
            return None
        if len(text) > src_mod.MAX_RECORD_BYTES:
            raise src_mod.record_too_long(where)
        if not text.strip():
            stats.empty += 1
            return None
        return text

    yield from batches(source, bad, pick, records)


def pretrain_docs(source, index, bad, encoder, text_column, stats) -> Iterator[list[Doc]]:
    for texts in pretrain_texts(source, bad, text_column, stats):
        yield [Doc(ids, None, index) for ids in encoder.documents(texts)]


_ANSWERS = ("answer", "output", "response", "completion")


def _null_column(exc: MoaiInputError, record: dict, where: str) -> MoaiInputError:
    """'no column X' for a column that exists but is null or empty, and 'no assistant answer' for
    an empty answer column, say which column and what is wrong with it."""
    text = str(exc)
    for name, value in record.items():
        named = f"no column '{name}'" in text or ("no assistant answer" in text and name in _ANSWERS)
        if named and (value is None or (isinstance(value, str) and not value.strip())):
            what = "null" if value is None else "empty"
            return MoaiInputError(f"{where}: '{name}' is {what}", hint="every SFT record needs a non-empty "
                                  "prompt and answer; fix the row or pass --skip-bad-rows to skip such rows")
    return exc


def _missing_column(exc: MoaiInputError, record: dict, where: str, first: tuple[str, list[str]] | None) -> MoaiInputError:
    """'no SFT schema recognised' for a record that lacks a column the first record had says
    which column is missing (the record's columns alone name no schema)."""
    if first is None or "no SFT schema recognised" not in str(exc):
        return exc
    missing = [k for k in first[1] if k not in record]
    if not missing:
        return exc
    return MoaiInputError(f"{where}: no column {', '.join(repr(k) for k in missing)} (the first record, "
                          f"{first[0]}, has it); columns found: {', '.join(map(str, record)) or '(none)'}",
                          hint="every SFT record needs a prompt and an answer; fix the row or pass --skip-bad-rows")


def sft_items(source, bad, template, mapping, records=None, schema_seen: bool = False) -> Iterator[list[tuple]]:
    """Batches of (rendered text, loss spans, where); `schema_seen`: the source's first record
    was read elsewhere (by another task), so a record that does not fit is one bad row."""
    from moai_llm.data.formats import to_messages
    from moai_llm.data.sft import render

    state = {"seen": schema_seen, "first": None}

    def pick(record, where):
        try:
            messages = to_messages(record, mapping, where)
        except MoaiInputError as exc:
            exc = _missing_column(_null_column(exc, record, where), record, where, state["first"])
            if not state["seen"]:  # the first record decides the schema: a mismatch is not one bad row
                raise exc from None
            bad.bad(where, str(exc).split(": ", 1)[-1])
            return None
        state["seen"] = True
        state["first"] = state["first"] or (where, [str(k) for k in record])
        if sum(len(m.get("content") or "") for m in messages) > src_mod.MAX_RECORD_BYTES:
            raise src_mod.record_too_long(where)  # any format: .jsonl lines are cut off earlier
        try:
            return (*render(template, messages), where)
        except MoaiInputError as exc:  # the record's line, then the template's own words
            raise MoaiInputError(f"{where}: {exc}", hint=exc.hint) from None

    yield from batches(source, bad, pick, records)


def sft_docs(source, index, bad, encoder, template, mapping, stats) -> Iterator[list[Doc]]:
    for batch in sft_items(source, bad, template, mapping):
        yield sft_encode(batch, index, encoder, stats)


def sft_encode(batch: list[tuple], index: int, encoder, stats: Stats) -> list[Doc]:
    """Tokenize rendered conversations; one longer than a row keeps its head (counted)."""
    seq_len = stats.seq_len
    docs = []
    encoded = encoder.with_loss_spans([t for t, _, _ in batch], [s for _, s, _ in batch])
    for (ids, labels), (_, _, where) in zip(encoded, batch, strict=True):
        if len(ids) > seq_len:  # a conversation never splits: keep its head, count the rest
            stats.truncated += 1
            stats.first_truncated = stats.first_truncated or f"{where} ({len(ids)} tokens)"
            stats.tokens_dropped += len(ids) - seq_len
            ids, labels = ids[:seq_len], labels[:seq_len]
            if (labels == -100).all():
                stats.dropped_docs += 1
                continue
        docs.append(Doc(ids, labels, index))
    return docs


def prefetched(items: Iterator[list], depth: int = 2) -> Iterator[list]:
    """Run a batch generator in a thread, `depth` batches ahead.

    Reading and tokenizing the next batch (the Rust tokenizer releases the GIL) overlaps with
    packing and writing this one; the bounded queue keeps memory bounded. Errors raised while
    reading (a bad row) come out here, in the caller's thread.
    """
    done, stop = object(), threading.Event()
    q: queue.Queue = queue.Queue(maxsize=depth)

    def work() -> None:
        try:
            for batch in items:
                if stop.is_set():
                    return
                q.put(batch)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=work, name="moai-data-reader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put() so the thread can see `stop`
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def report_truncated(stats: Stats) -> None:
    """Say how many SFT conversations did not fit in a row, and what became of them."""
    if not stats.truncated:
        return
    from moai_llm.progress import warn

    dropped = (f"; {stats.dropped_docs:,} of them dropped whole (no answer token in their first "
               f"{stats.seq_len} tokens)" if stats.dropped_docs else "")
    warn(f"{stats.truncated:,} conversations are longer than a row of {stats.seq_len} tokens (first: "
         f"{stats.first_truncated}): a conversation is never split, so each keeps its first {stats.seq_len} "
         f"tokens ({stats.tokens_dropped:,} tokens dropped in all){dropped}. A larger --seq-len, up to the "
         f"model's --max-positions, keeps them whole")
