"""`prepare_dataset`: sources -> tokenized, packed, memory-mapped rows, cached and built once.

The steps, streaming end to end so memory stays bounded whatever the input size:
read records (sources.py) -> text or chat-rendered conversation (documents.py, formats.py,
sft.py) -> tokenize in batches on every core (encoding.py) -> pack over a bounded buffer
(packing.py) -> write Arrow shards in batches (store.py) -> manifest.json last.

Cache: the manifest records the settings, the tokenizer's hash and each source's fingerprint;
the same call again returns it without work (a hit costs a stat and a head/tail hash per
file). A different source content, tokenizer or setting rebuilds.
Safety: before building, the memory the flags need is predicted (footprint.py) and a request
that cannot fit is refused with the largest --seq-len that fits. The build happens in a hidden
temporary folder next to the output and is renamed into place when complete, so an interrupted
run leaves nothing that looks complete, and a full disk removes it and says how much is needed.
The folder's lock (moai_llm.locks) names its owner: concurrent callers with the same settings
(processes or nodes on a shared filesystem) build once, the others wait and find the cache; a
caller with other settings is refused while the first one builds. Leftovers of killed builds
are removed by the next call, cache hits included.

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

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from moai_llm.atomic import remove_leftovers, replace_dir, temp_dir_beside
from moai_llm.data import documents
from moai_llm.data import sources as src_mod
from moai_llm.data.executors import Executor
from moai_llm.data.footprint import (
    MAX_SEQ_LEN,
    InputSize,
    disk_estimate,
    measure_input,
    memory_need,
)
from moai_llm.data.packing import StreamPacker, build_rows, split_long
from moai_llm.data.store import (
    FORMAT,
    ROW_BYTES_PER_TOKEN,
    ShardWriter,
    read_manifest,
    write_manifest,
)
from moai_llm.errors import MoaiInputError
from moai_llm.ownership import claim, write_marker
from moai_llm.resources import Memory

MODES = ("pretrain", "sft", "preference")
PACKINGS = ("bfd", "hierarchical")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def tokenizer_hash(tokenizer_dir: str | os.PathLike) -> str:
    """A hash of the files that define a tokenizer (vocabulary, merges, specials, chat template)."""
    folder = Path(tokenizer_dir)
    names: tuple[str, ...] = _TOKENIZER_FILES
    if not (folder / "tokenizer.json").is_file():
        if not list(folder.glob("*.py")):
            raise MoaiInputError(f"{tokenizer_dir}: not a tokenizer folder (no tokenizer.json)",
                                 hint="pass --tokenizer DIR written by `moai tokenizer train`")
        names = tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))  # defined by its own code
    h = hashlib.blake2b(digest_size=16)
    for name in names:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def check_seq_len(seq_len: int, max_positions: int | None, size: InputSize, mode: str = "pretrain",
                  available: Memory | None = None) -> None:
    """Refuse a --seq-len that is too short, longer than the model's positions (or, without
    --max-positions, than MAX_SEQ_LEN), or that needs more memory than `available` (default:
    what this process can still get)."""
    if seq_len < 8 or (max_positions and seq_len > max_positions):
        limit = f" and at most the model's {max_positions} positions" if max_positions else ""
        raise MoaiInputError(f"--seq-len {seq_len}: a row must hold at least 8 tokens{limit}")
    from moai_llm.resources import available_memory, check_memory, human_bytes, largest_fitting

    limit = max(max_positions or 0, MAX_SEQ_LEN)
    need = lambda n: memory_need(n, size, mode)  # noqa: E731
    if seq_len > limit:
        avail = available or available_memory()
        best = largest_fitting(need, avail.bytes, 8, limit, 1024)
        raise MoaiInputError(
            f"--seq-len {seq_len}: longer than {limit} tokens, more than any model's context; it would need about "
            f"{human_bytes(need(seq_len))} of memory ({human_bytes(avail.bytes)} available, {avail.source}); "
            + (f"the largest --seq-len that fits is {best}" if best else "not even --seq-len 8 fits"),
            hint="pass --max-positions N for a model with more positions")
    check_memory("--seq-len", seq_len, need, low=8, step=1024, available=available,
                 what=" for the rows being packed and written")


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
    trust_remote_code: bool = False,
    truncation: str = "keep_start",
    tasks: int | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Build (or find) the prepared dataset in `output_dir` and return its manifest.

    The returned dict is the manifest plus `cache_hit` (True when nothing was built).
    `max_positions` is the model's context length, when known, to refuse longer rows.
    `thinking` ("off" | "keep"): SFT with a thinking chat template (Qwen3), see data/sft.py.
    `truncation` ("keep_start" | "keep_end"): preference pairs, see data/preference.py.
    `trust_remote_code`: allow a tokenizer folder defined only by its own Python code.
    `tasks`, `executor` (local workers, Slurm, Ray): how pretrain and SFT data is built, see data/parallel.py.
    """
    if mode not in MODES:
        raise MoaiInputError(f"--mode {mode}: unknown mode", hint=f"use one of {', '.join(MODES)}")
    if packing not in PACKINGS:
        raise MoaiInputError(f"--packing {packing}: unknown packing", hint=f"use one of {', '.join(PACKINGS)}")
    srcs = src_mod.resolve_sources(sources, weights, dataset, dataset_config, split)
    executor = _executor(executor, tasks)
    if seq_len < 8 or seq_len > max(max_positions or 0, MAX_SEQ_LEN) or (max_positions and seq_len > max_positions):
        check_seq_len(seq_len, max_positions, measure_input(srcs), mode)  # refuses before any reading
    from moai_llm.data.encoding import check_tokenizer_folder

    check_tokenizer_folder(tokenizer_dir, trust_remote_code)
    tok_hash = tokenizer_hash(tokenizer_dir)
    settings = _settings(int(seq_len), mode, packing, num_bins, text_column, mapping, skip_bad_rows, thinking,
                         truncation)
    # replaced only when it is moai's prepared dataset; never a user's folder, nor one holding the inputs
    claim(output_dir, "dataset", "--output-dir", [*(sources or []), str(tokenizer_dir)])
    out = Path(output_dir).expanduser().resolve()
    from moai_llm.locks import RunLock, check_no_readers

    key = hashlib.blake2b(json.dumps([settings, tok_hash, [src_mod.fingerprint(s) for s in srcs], tasks],
                                     sort_keys=True, default=str).encode(), digest_size=12).hexdigest()
    with RunLock(out, command="moai data prepare", key=key, wait_same_key=True):
        remove_leftovers(out)  # of killed builds: the lock says no live build owns them
        if not force and (hit := _cached(out, settings, tok_hash, srcs)) and tasks in (None, hit.get("tasks", 1)):
            return hit
        check_no_readers(out)  # a run reading it holds it: rebuilding would change its rows
        size = measure_input(srcs)
        check_seq_len(seq_len, max_positions, size, mode, available=_per_worker(executor))
        _check_disk(out, size)
        if mode in ("pretrain", "sft"):  # as datatrove tasks; preference pairs: one process, below
            from moai_llm.data.parallel import build

            manifest = build(out, srcs, tokenizer_dir, settings, tok_hash, key=key, executor=executor, tasks=tasks,
                             num_proc=num_proc, buffer_tokens=buffer_tokens, trust_remote_code=trust_remote_code,
                             force=force, size=size)
        else:
            manifest = _build_into(out, srcs, tokenizer_dir, settings, tok_hash, size, num_proc, buffer_tokens,
                                   trust_remote_code)
        write_marker(out, "dataset", "moai data prepare", record_files=True)  # under the lock, after publishing
    return {**manifest, "cache_hit": False}


def _settings(seq_len: int, mode: str, packing: str, num_bins: int, text_column: str | None,
              mapping: dict[str, str] | None, skip_bad_rows: bool, thinking: str, truncation: str) -> dict[str, Any]:
    """What the rows depend on (besides sources and tokenizer): recorded in the manifest."""
    settings = {"format": FORMAT, "seq_len": seq_len, "mode": mode, "packing": packing,
                "num_bins": num_bins if packing == "hierarchical" else None, "text_column": text_column,
                "mapping": mapping or None, "skip_bad_rows": skip_bad_rows}
    if mode in ("sft", "preference"):
        if thinking not in ("off", "keep"):
            raise MoaiInputError(f"--thinking {thinking}: unknown value", hint="use off or keep")
        settings["thinking"] = thinking
    if mode == "preference":
        from moai_llm.data.preference import check_truncation

        check_truncation(truncation)
        settings["truncation"] = truncation
    return settings


def _per_worker(executor: Executor) -> Memory | None:
    """The memory each of several local workers can count on (None: this process's own)."""
    workers = (executor.workers or 1) if executor.kind == "local" else 1
    if workers <= 1:
        return None
    from moai_llm.resources import available_memory

    avail = available_memory()
    return Memory(avail.bytes // workers, f"{avail.source}, shared by {workers} workers")


def _executor(executor: Executor | None, tasks: int | None) -> Executor:
    if tasks is not None and tasks < 1:
        raise MoaiInputError(f"--tasks {tasks}: must be 1 or more")
    executor = executor or Executor()
    executor.check()
    return executor


def _cached(out: Path, settings: dict, tok_hash: str, srcs: list[src_mod.Source]) -> dict[str, Any] | None:
    manifest = read_manifest(out)
    if manifest is None or manifest.get("settings") != settings or manifest.get("tokenizer_hash") != tok_hash:
        return None
    stored = manifest.get("sources", [])
    if len(stored) != len(srcs) or not all(src_mod.same_content(s["fingerprint"], src) for s, src in zip(stored, srcs, strict=True)):
        return None
    return {**manifest, "cache_hit": True}


def _check_disk(out: Path, size: InputSize) -> None:
    """Refuse (exit 2, nothing written) when the output's estimate exceeds the free space."""
    from moai_llm.errors import DiskFullError
    from moai_llm.resources import free_disk, human_bytes

    estimate, free = disk_estimate(size), free_disk(out)
    if estimate and estimate > free:
        raise DiskFullError(f"{out}: the prepared data would need about {human_bytes(estimate)} and "
                            f"{human_bytes(free)} is free", str(out), None if estimate == float("inf") else int(estimate),
                            free, hint="free space, lower --weights, or choose another --output-dir")


def _build_into(out: Path, srcs, tokenizer_dir, settings, tok_hash, size: InputSize, num_proc, buffer_tokens,
                trust_remote_code) -> dict:
    """Build in `.NAME.building-*` beside `out`, then rename it into place; on a full disk, remove
    it and say how much the whole output needs (written so far, scaled by the input read)."""
    from moai_llm.resources import disk_full_error, folder_bytes, is_disk_full

    tmp = temp_dir_beside(out)
    stats = documents.Stats(len(srcs), settings["seq_len"])
    try:
        manifest = _build(srcs, tokenizer_dir, settings, tok_hash, tmp, num_proc, buffer_tokens, stats,
                          trust_remote_code)
        manifest["output_dir"] = str(out)
        write_manifest(tmp, manifest)
        replace_dir(tmp, out)
        return manifest
    except BaseException as exc:
        if not is_disk_full(exc):
            raise
        written = folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        # Rows lag the documents read (the packing buffer), so scale the tokens read, not the bytes
        # written, to the whole input, and divide by how full the rows written so far are.
        docs, tokens = sum(stats.docs), sum(stats.tokens)
        fill = stats.tokens_out / (stats.rows_out * stats.seq_len) if stats.rows_out else 1.0
        needed = (int(tokens * size.records / docs * ROW_BYTES_PER_TOKEN / fill) if size.records and docs
                  else disk_estimate(size))
        raise disk_full_error(out, max(needed or 0, written) or None, written) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the build


def _build(srcs, tokenizer_dir, settings, tok_hash, tmp: Path, num_proc, buffer_tokens,
           stats: documents.Stats, trust_remote_code: bool = False) -> dict:
    from moai_llm.data.encoding import Encoder, load_row_tokenizer, rust_parallelism
    from moai_llm.progress import progress_bar

    started = time.time()
    # Fingerprints before reading: a file edited during the build then fails the next cache check.
    fingerprints = [src_mod.fingerprint(s, full=True) for s in srcs]
    seq_len, mode = settings["seq_len"], settings["mode"]
    tokenizer = load_row_tokenizer(tokenizer_dir, seq_len, trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoder = Encoder(tokenizer)
    bad = src_mod.BadRows(settings["skip_bad_rows"])
    packer = StreamPacker(seq_len, settings["packing"], buffer_tokens, num_bins=settings["num_bins"] or 8)
    docs_of, rows_of, pairs = _reader(settings, tokenizer_dir, encoder, bad, stats)
    writer = ShardWriter(tmp, seq_len, extra_columns=pairs.columns if pairs else ())

    def emit(rows):
        stats.rows_out += len(rows)
        stats.tokens_out += sum(len(doc.ids) for row in rows for doc in row)
        for row in rows_of(rows, seq_len, pad_id):
            writer.add(row)

    # The reader thread already keeps two cores busy (tokenizing | packing); the Rust tokenizer's
    # own threads only pay off beyond that (see encoding.py for the measurement).
    rust_threads = num_proc > 1 if num_proc else (os.cpu_count() or 1) > 2
    with rust_parallelism(rust_threads), progress_bar(unit="tok", transient=True) as bar, _abandon_on_error(writer):
        task = bar.add_task("preparing", total=None, info="")
        for index, source in enumerate(srcs):
            for batch in documents.prefetched(docs_of(source, index)):
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
    documents.report_truncated(stats)
    if pairs:
        pairs.report(seq_len)
    slots = writer.num_rows * seq_len
    return {**({"preference": pairs.manifest()} if pairs else {}),
        "format": FORMAT, "complete": True, "seq_len": seq_len, "mode": mode, "packing": settings["packing"],
        "settings": settings, "tokenizer_hash": tok_hash, "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
        "pad_token_id": pad_id, "num_rows": writer.num_rows, "num_tokens": real,
        "num_documents": sum(stats.docs), "packing_efficiency": real / slots,
        "docs_split": stats.docs_split, "tokens_cut": stats.tokens_cut, "tokens_dropped": stats.tokens_dropped,
        "dropped_documents": stats.dropped_docs, "conversations_truncated": stats.truncated,
        "first_truncated": stats.first_truncated, "empty_documents": stats.empty, "skipped_rows": bad.count,
        "first_skipped_row": bad.first,
        "doc_length_histogram": {str(k): v for k, v in sorted(stats.histogram.items())},
        "sources": [{"spec": s.spec, "weight": s.weight, "documents": stats.docs[i], "tokens": stats.tokens[i],
                     "token_share": stats.tokens[i] / real, "fingerprint": fingerprints[i]}
                    for i, s in enumerate(srcs)],
        "shards": writer.shards, "build_seconds": round(time.time() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _reader(settings: dict, tokenizer_dir, encoder, bad, stats: documents.Stats):
    """`docs_of(source, index)` for the build's mode, its row builder, and the pair counts
    (preference data only, else None)."""
    mode, mapping = settings["mode"], settings["mapping"]
    if mode == "pretrain":
        return (lambda s, i: documents.pretrain_docs(s, i, bad, encoder, settings["text_column"], stats)), build_rows, None
    from moai_llm.data.sft import ChatTemplate

    template = ChatTemplate.from_dir(tokenizer_dir, thinking=settings.get("thinking", "off"))
    if mode == "sft":
        return (lambda s, i: documents.sft_docs(s, i, bad, encoder, template, mapping, stats)), build_rows, None
    from moai_llm.data import preference

    pairs = preference.PairStats(settings["seq_len"] // 2, settings["truncation"])
    return ((lambda s, i: preference.preference_docs(s, i, bad, encoder, template, mapping, stats, pairs)),
            preference.build_pair_rows, pairs)


@contextlib.contextmanager
def _abandon_on_error(writer: ShardWriter):
    try:
        yield
    except BaseException:
        writer.abandon()
        raise
