"""Text streams for tokenizer training: local files, folders, globs, hub datasets, languages.

Everything is read lazily, one block or record at a time, so a 1 GB file never sits in memory
(item 9). Plain text is yielded in blocks of about 64 KB of whole lines: newline and indentation
runs stay inside the text, so the tokenizer learns them too. Records (jsonl/json/csv/parquet)
yield their text column, or, when none is named and no usual one ("text", "content", ...) is
present, all their string fields joined by newlines (instruction/answer data then trains too).

    >>> from moai_llm.tokenizer.sources import resolve_inputs, iter_sources
    >>> sources = resolve_inputs(["corpus/*.jsonl", "notes.txt"])
    >>> total = sum(s.size or 0 for s in sources)
    >>> texts = iter_sources(sources)
"""

from __future__ import annotations

import csv
import glob
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from moai_llm.errors import MoaiInputError
from moai_llm.progress import info

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ""}
RECORD_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}
TEXT_COLUMNS = ("text", "content", "document", "body", "sentence", "passage")
BLOCK_CHARS = 64 * 1024

# `--multilingual` on the hub: large, clean, well-known corpora with one config per language.
HUB_CORPORA = {
    "ko": ("wikimedia/wikipedia", "20231101.ko"),
    "en": ("wikimedia/wikipedia", "20231101.en"),
    "ja": ("wikimedia/wikipedia", "20231101.ja"),
    "zh": ("wikimedia/wikipedia", "20231101.zh"),
}


@dataclass
class TextSource:
    """One input: a name for messages, its size in bytes when known, and a text iterator."""

    name: str
    size: int | None
    open: Callable[[], Iterator[str]]


def iter_sources(sources: list[TextSource]) -> Iterator[str]:
    """All texts of all sources, in order."""
    for source in sources:
        yield from source.open()


def _expand(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        files = [m for m in matches if m.is_file() and _readable_kind(m)]
        if not files:
            raise MoaiInputError(f"--input {spec}: the pattern matches no text file",
                                 hint=f"supported: {', '.join(sorted(TEXT_SUFFIXES | RECORD_SUFFIXES - {''}))}")
        return files
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _readable_kind(f)
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not files:
            raise MoaiInputError(f"--input {spec}: the folder holds no text files",
                                 hint="put .txt/.jsonl/.json/.csv/.parquet files in it")
        return files
    if not p.exists():
        raise MoaiInputError(f"--input {spec}: no such file or folder", hint="check the path")
    return [p]


def _readable_kind(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES | RECORD_SUFFIXES


def resolve_inputs(specs: list[str], text_column: str | None = None) -> list[TextSource]:
    """Local files, folders and globs → sources. Missing or empty files raise MoaiInputError."""
    sources = []
    for spec in specs:
        for path in _expand(spec):
            size = path.stat().st_size
            if size == 0:
                raise MoaiInputError(f"--input {path}: the file is empty", hint="remove it or give another file")
            sources.append(TextSource(str(path), size, _opener(path, text_column)))
    return sources


def _opener(path: Path, column: str | None) -> Callable[[], Iterator[str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return lambda: _jsonl(path, column)
    if suffix == ".json":
        return lambda: _json(path, column)
    if suffix == ".csv":
        return lambda: _csv(path, column)
    if suffix == ".parquet":
        return lambda: _parquet(path, column)
    return lambda: _text_blocks(path)


def _text_blocks(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8", errors="strict", newline="") as f:
            block: list[str] = []
            size = 0
            for line in f:
                block.append(line)
                size += len(line)
                if size >= BLOCK_CHARS:
                    yield "".join(block)
                    block, size = [], 0
            if block:
                yield "".join(block)
    except UnicodeDecodeError as exc:
        raise MoaiInputError(f"--input {path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                             hint="convert it to UTF-8") from None


def record_text(record: object, column: str | None, where: str) -> str:
    """The text of one record: its `column`, a usual text field, or all its string fields."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise MoaiInputError(f"{where}: expected a JSON object or string, got {type(record).__name__}")
    if column is not None:
        if column not in record:
            raise MoaiInputError(f"{where}: no column {column!r} (columns: {', '.join(map(str, record))})",
                                 hint="pass --text-column with one of them")
        value = record[column]
        return value if isinstance(value, str) else ("" if value is None else str(value))
    for name in TEXT_COLUMNS:
        if isinstance(record.get(name), str):
            return record[name]
    parts = []
    for value in record.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):  # chat records: messages / conversations
            parts.extend(str(m.get("content") or m.get("value") or "") for m in value if isinstance(m, dict))
    return "\n".join(p for p in parts if p)


def _jsonl(path: Path, column: str | None) -> Iterator[str]:
    import orjson

    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise MoaiInputError(f"--input {path}:{n}: not valid JSON ({exc})", hint="fix or remove that line") from None
            yield record_text(record, column, f"{path}:{n}")


def _json(path: Path, column: str | None) -> Iterator[str]:
    import orjson

    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise MoaiInputError(f"--input {path}: not valid JSON ({exc})", hint="for one record per line use .jsonl") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}: the first list inside
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        raise MoaiInputError(f"--input {path}: expected a list of records")
    for n, record in enumerate(data):
        yield record_text(record, column, f"{path}[{n}]")


def _csv(path: Path, column: str | None) -> Iterator[str]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            yield record_text(row, column, f"{path}:{n}")


def _parquet(path: Path, column: str | None) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=1024, columns=[column] if column and column in pf.schema_arrow.names else None):
        for n, record in enumerate(batch.to_pylist()):
            yield record_text(record, column, f"{path} row {n}")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the HuggingFace hub can be used: not switched offline and answering quickly."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_source(name: str, config: str | None = None, split: str = "train", text_column: str | None = None,
               max_samples: int | None = None) -> TextSource:
    """A hub dataset, streamed (nothing is downloaded whole). Fails with one line when the name
    is unknown or the hub cannot be reached; a dataset already in the local cache still works."""
    import datasets

    label = f"{name}" + (f" ({config})" if config else "")
    if not hub_reachable():
        os.environ["HF_DATASETS_OFFLINE"] = "1"  # use the cache, don't wait for network timeouts
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # unknown name, bad config, offline: all are bad input here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MoaiInputError(f"--dataset {label}: could not be loaded: {reason[:200]}",
                             hint="check the name and --dataset-config, or use --input with local files") from None

    def texts() -> Iterator[str]:
        for n, record in enumerate(ds):
            if max_samples is not None and n >= max_samples:
                break
            yield record_text(record, text_column, f"{label} record {n}")

    return TextSource(label, None, texts)


def multilingual_sources(langs: list[str], max_samples_per_lang: int | None = None) -> list[TextSource]:
    """One source per language: a well-known hub corpus when the hub is reachable, moai's
    embedded corpus (`moai_llm.corpora`) when it is not. Says which it used."""
    from moai_llm import corpora

    known = corpora.languages()
    bad = [lang for lang in langs if lang not in known and lang not in HUB_CORPORA]
    if bad:
        raise MoaiInputError(f"--multilingual {' '.join(bad)}: unknown language", hint=f"choose from {' '.join(known)}")
    online = hub_reachable()
    sources = []
    for lang in langs:
        if online and lang in HUB_CORPORA:
            name, config = HUB_CORPORA[lang]
            info(f"{lang}: streaming {name} ({config}) from the hub")
            sources.append(hub_source(name, config, max_samples=max_samples_per_lang or 100_000))
        else:
            info(f"{lang}: the hub is not reachable, using moai's embedded {lang} corpus")
            sources.append(_embedded(lang, max_samples_per_lang))
    return sources


def _embedded(lang: str, max_samples: int | None) -> TextSource:
    from moai_llm import corpora

    def texts() -> Iterator[str]:
        for n, text in enumerate(corpora.iter_texts(lang, split="train")):
            if max_samples is not None and n >= max_samples:
                break
            yield text

    try:
        size = corpora.path(lang).stat().st_size
    except (ValueError, OSError):
        size = None
    return TextSource(f"moai corpus {lang}", size, texts)
