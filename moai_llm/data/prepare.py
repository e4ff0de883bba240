"""`prepare_dataset`: sources -> tokenized, packed, memory-mapped rows, cached and built once.

The steps, streaming end to end so memory stays bounded whatever the input size:
read records (sources.py) -> text or chat-rendered conversation (formats.py, sft.py) ->
tokenize in batches on every core (encoding.py) -> pack over a bounded buffer (packing.py) ->
write Arrow shards in batches (store.py) -> manifest.json last.

Cache: the manifest records the settings, the tokenizer's hash and each source's fingerprint;
the same call again returns it without work (a hit costs a stat and a head/tail hash per
file). A different source content, tokenizer or setting rebuilds.
Safety: the build happens in a hidden temporary folder next to the output and is renamed into
place when complete, so an interrupted run leaves nothing that looks complete; a `FileLock` on
a lock file next to the output folder makes concurrent callers (processes or nodes on a shared
filesystem) build once: the others wait, then find the cache.

A tiny build (a real one uses a real corpus and e.g. `seq_len=2048`):

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20, d / "tok", vocab_size=300)
    >>> import json
    >>> rows = [{"text": t} for t in ["hello world", "the quick brown fox"] * 10]
    >>> _ = (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> manifest = prepare_dataset([str(d / "corpus.jsonl")], tok, 64, d / "prepared")
    >>> manifest["num_documents"], manifest["cache_hit"], 0 < manifest["packing_efficiency"] <= 1
    (20, False, True)
    >>> prepare_dataset([str(d / "corpus.jsonl")], tok, 64, d / "prepared")["cache_hit"]  # same call: cached
    True
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moai_llm.atomic import replace_dir
from moai_llm.data import sources as src_mod
from moai_llm.data.packing import Doc, StreamPacker, build_rows, split_long
from moai_llm.data.store import FORMAT, ShardWriter, read_manifest, write_manifest
from moai_llm.errors import MoaiInputError

MODES = ("pretrain", "sft")
PACKINGS = ("bfd", "hierarchical")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
BATCH_DOCS = 2048  # documents per tokenizer call: big enough for every core, small for memory


def tokenizer_hash(tokenizer_dir: str | os.PathLike) -> str:
    """A hash of the files that define a tokenizer (vocabulary, merges, specials, chat template)."""
    folder = Path(tokenizer_dir)
    if not (folder / "tokenizer.json").is_file():
        raise MoaiInputError(f"{tokenizer_dir}: not a tokenizer folder (no tokenizer.json)",
                             hint="pass --tokenizer DIR written by `moai tokenizer train`")
    h = hashlib.blake2b(digest_size=16)
    for name in _TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def prepare_dataset(
    sources: list[str] | None,
    tokenizer_dir: str | os.PathLike,
    seq_len: int,
    output_dir: str | os.PathLike,
    mode: str = "pretrain",
    *,
    weights: list[float] | None = None,
    text_column: str | None = None,
    mapping: dict[str, str] | None = None,
    packing: str = "bfd",
    num_bins: int = 8,
    skip_bad_rows: bool = False,
    num_proc: int | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    max_positions: int | None = None,
    force: bool = False,
    buffer_tokens: int | None = None,
    thinking: str = "off",
) -> dict[str, Any]:
    """Build (or find) the prepared dataset in `output_dir` and return its manifest.

    The returned dict is the manifest plus `cache_hit` (True when nothing was built).
    `max_positions` is the model's context length, when known, to refuse longer rows.
    `thinking` ("off" | "keep"): SFT with a thinking chat template (Qwen3), see data/sft.py.
    """
    if mode not in MODES:
        raise MoaiInputError(f"--mode {mode}: unknown mode", hint=f"use one of {', '.join(MODES)}")
    if packing not in PACKINGS:
        raise MoaiInputError(f"--packing {packing}: unknown packing", hint=f"use one of {', '.join(PACKINGS)}")
    if seq_len < 8 or (max_positions and seq_len > max_positions):
        limit = f" and at most the model's {max_positions} positions" if max_positions else ""
        raise MoaiInputError(f"--seq-len {seq_len}: a row must hold at least 8 tokens{limit}")
    srcs = src_mod.resolve_sources(sources, weights, dataset, dataset_config, split)
    tok_hash = tokenizer_hash(tokenizer_dir)
    settings = {"format": FORMAT, "seq_len": int(seq_len), "mode": mode, "packing": packing,
                "num_bins": num_bins if packing == "hierarchical" else None, "text_column": text_column,
                "mapping": mapping or None, "skip_bad_rows": skip_bad_rows}
    if mode == "sft":
        if thinking not in ("off", "keep"):
            raise MoaiInputError(f"--thinking {thinking}: unknown value", hint="use off or keep")
        settings["thinking"] = thinking
    out = Path(output_dir).expanduser().resolve()
    if not force and (hit := _cached(out, settings, tok_hash, srcs)):
        return hit
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise MoaiInputError(f"{out}: exists and is not a prepared dataset", hint="choose another --output-dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(out.parent / f".{out.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        from moai_llm.progress import info

        info(f"waiting for another process that is preparing {out}")
        lock.acquire()
    try:
        if not force and (hit := _cached(out, settings, tok_hash, srcs)):
            return hit  # another process built it while we waited
        for stale in [*out.parent.glob(f".{out.name}.building-*"), *out.parent.glob(f".{out.name}.old-*")]:  # killed builds
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.parent / f".{out.name}.building-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            manifest = _build(srcs, tokenizer_dir, settings, tok_hash, tmp, skip_bad_rows, num_proc, buffer_tokens)
            manifest["output_dir"] = str(out)
            write_manifest(tmp, manifest)
            replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return {**manifest, "cache_hit": False}


def _cached(out: Path, settings: dict, tok_hash: str, srcs: list[src_mod.Source]) -> dict[str, Any] | None:
    manifest = read_manifest(out)
    if manifest is None or manifest.get("settings") != settings or manifest.get("tokenizer_hash") != tok_hash:
        return None
    stored = manifest.get("sources", [])
    if len(stored) != len(srcs) or not all(src_mod.same_content(s["fingerprint"], src) for s, src in zip(stored, srcs, strict=True)):
        return None
    return {**manifest, "cache_hit": True}


# ---------------------------------------------------------------- the build


def _load_tokenizer(tokenizer_dir, seq_len: int):
    from moai_llm.data.encoding import load_backend

    tokenizer = load_backend(tokenizer_dir)
    limit = tokenizer.model_max_length
    if isinstance(limit, int) and limit < 10**8 and seq_len > limit:
        raise MoaiInputError(f"--seq-len {seq_len}: longer than the tokenizer's model_max_length {limit}",
                             hint=f"use --seq-len {limit} or less")
    return tokenizer


class _Stats:
    def __init__(self, n_sources: int, seq_len: int):
        self.seq_len = seq_len
        self.docs = [0] * n_sources
        self.tokens = [0] * n_sources
        self.histogram: dict[int, int] = {}
        self.docs_split = self.tokens_cut = self.tokens_dropped = self.dropped_docs = self.empty = 0

    def document(self, source: int, n: int) -> None:
        self.docs[source] += 1
        self.tokens[source] += n
        bucket = 1 << max(0, (n - 1).bit_length())  # upper bound of a power-of-two bucket
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1


def _batches(source: src_mod.Source, bad: src_mod.BadRows, pick) -> Iterator[list]:
    """Items chosen by `pick(record, where)` in batches, with the source's weight applied."""
    passes = max(1, int(-(-source.weight // 1)))
    for p in range(passes):
        fraction = min(1.0, source.weight - p)
        batch = []
        for i, (record, where) in enumerate(src_mod.iter_records(source, bad)):
            # Deterministic subsample for fractional weights (Knuth's multiplicative hash).
            if fraction < 1.0 and ((i * 2654435761) % 2**32) / 2**32 >= fraction:
                continue
            item = pick(record, where)
            if item is not None:
                batch.append(item)
                if len(batch) >= BATCH_DOCS:
                    yield batch
                    batch = []
        if batch:
            yield batch


def _pretrain_docs(source, index, bad, encoder, text_column, stats) -> Iterator[list[Doc]]:
    column: list[str] = []

    def pick(record, where):
        if not column:
            column.append(src_mod.text_column(record, where, text_column))
        text = record.get(column[0])
        if not isinstance(text, str):
            bad.bad(where, f"no text in column '{column[0]}' (found {type(text).__name__})")
            return None
        if not text.strip():
            stats.empty += 1
            return None
        return text

    for texts in _batches(source, bad, pick):
        yield [Doc(ids, None, index) for ids in encoder.documents(texts)]


def _sft_docs(source, index, bad, encoder, template, mapping, stats) -> Iterator[list[Doc]]:
    from moai_llm.data.formats import to_messages
    from moai_llm.data.sft import render

    state = {"seen": False}

    def pick(record, where):
        try:
            messages = to_messages(record, mapping, where)
        except MoaiInputError as exc:
            if not state["seen"]:  # the first record decides the schema: a mismatch is not one bad row
                raise
            bad.bad(where, str(exc).split(": ", 1)[-1])
            return None
        state["seen"] = True
        return render(template, messages)

    for batch in _batches(source, bad, pick):
        docs = []
        for ids, labels in encoder.with_loss_spans([t for t, _ in batch], [s for _, s in batch]):
            if len(ids) > stats.seq_len:  # a conversation never splits: keep its head, count the rest
                stats.tokens_dropped += len(ids) - stats.seq_len
                ids, labels = ids[: stats.seq_len], labels[: stats.seq_len]
                if (labels == -100).all():
                    stats.dropped_docs += 1
                    continue
            docs.append(Doc(ids, labels, index))
        yield docs


def _prefetched(batches: Iterator[list], depth: int = 2) -> Iterator[list]:
    """Run a batch generator in a thread, `depth` batches ahead.

    Reading and tokenizing the next batch (the Rust tokenizer releases the GIL) overlaps with
    packing and writing this one; the bounded queue keeps memory bounded. Errors raised while
    reading (a bad row) come out here, in the caller's thread.
    """
    done, stop = object(), threading.Event()
    q: queue.Queue = queue.Queue(maxsize=depth)

    def work() -> None:
        try:
            for batch in batches:
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


def _build(srcs, tokenizer_dir, settings, tok_hash, tmp: Path, skip_bad_rows: bool, num_proc, buffer_tokens) -> dict:
    from moai_llm.data.encoding import Encoder, rust_parallelism
    from moai_llm.progress import progress_bar

    started = time.time()
    # Fingerprints before reading: a file edited during the build then fails the next cache check.
    fingerprints = [src_mod.fingerprint(s, full=True) for s in srcs]
    seq_len, mode = settings["seq_len"], settings["mode"]
    tokenizer = _load_tokenizer(tokenizer_dir, seq_len)
    if mode == "sft":
        from moai_llm.data.sft import ChatTemplate

        template = ChatTemplate.from_dir(tokenizer_dir, thinking=settings.get("thinking", "off"))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoder = Encoder(tokenizer)
    stats = _Stats(len(srcs), seq_len)
    bad = src_mod.BadRows(skip_bad_rows)
    packer = StreamPacker(seq_len, settings["packing"], buffer_tokens, num_bins=settings["num_bins"] or 8)
    writer = ShardWriter(tmp, seq_len)

    def emit(rows):
        for row in build_rows(rows, seq_len, pad_id):
            writer.add(row)

    # The reader thread already keeps two cores busy (tokenizing | packing); the Rust tokenizer's
    # own threads only pay off beyond that (see encoding.py for the measurement).
    rust_threads = num_proc > 1 if num_proc else (os.cpu_count() or 1) > 2
    with rust_parallelism(rust_threads), progress_bar(unit="tok", transient=True) as bar:
        task = bar.add_task("preparing", total=None, info="")
        for index, source in enumerate(srcs):
            if mode == "pretrain":
                docs = _pretrain_docs(source, index, bad, encoder, settings["text_column"], stats)
            else:
                docs = _sft_docs(source, index, bad, encoder, template, settings["mapping"], stats)
            for batch in _prefetched(docs):
                tokens = 0
                for doc in batch:
                    n = len(doc.ids)
                    tokens += n
                    stats.document(index, n)
                    if n > seq_len:
                        pieces = split_long(doc, seq_len)
                        stats.docs_split += 1
                        stats.tokens_cut += n - len(pieces[0].ids)
                        for piece in pieces:
                            emit(packer.add(piece))
                    else:
                        emit(packer.add(doc))
                bar.advance(task, tokens)
        emit(packer.finish())
        writer.close()
    real = sum(stats.tokens)
    if real == 0:
        raise MoaiInputError("no usable documents in the input" + (f" ({bad.count} bad rows skipped)" if bad.count else ""),
                             hint="check --text-column / the SFT schema, and that the files hold text")
    slots = writer.num_rows * seq_len
    return {
        "format": FORMAT, "complete": True, "seq_len": seq_len, "mode": mode, "packing": settings["packing"],
        "settings": settings, "tokenizer_hash": tok_hash, "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
        "pad_token_id": pad_id, "num_rows": writer.num_rows, "num_tokens": real,
        "num_documents": sum(stats.docs), "packing_efficiency": real / slots,
        "docs_split": stats.docs_split, "tokens_cut": stats.tokens_cut, "tokens_dropped": stats.tokens_dropped,
        "dropped_documents": stats.dropped_docs, "empty_documents": stats.empty, "skipped_rows": bad.count,
        "first_skipped_row": bad.first,
        "doc_length_histogram": {str(k): v for k, v in sorted(stats.histogram.items())},
        "sources": [{"spec": s.spec, "weight": s.weight, "documents": stats.docs[i], "tokens": stats.tokens[i],
                     "token_share": stats.tokens[i] / real, "fingerprint": fingerprints[i]}
                    for i, s in enumerate(srcs)],
        "shards": writer.shards, "build_seconds": round(time.time() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
