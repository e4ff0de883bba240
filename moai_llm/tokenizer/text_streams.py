"""Text streams for tokenizer training: local files, folders, globs, hub datasets, languages.

Local files are found and read by the data layer (`moai_llm.data.sources`: the same file
types, text-column rules and one-line errors as `moai data prepare`), with one difference for
plain text: a tokenizer must see line breaks and indentation, so `.txt`/`.md` files are read
here in blocks of about 64 KB of whole lines instead of one document per line. Everything is
lazy, one block or record at a time, so a 1 GB file never sits in memory.

    >>> import json, tempfile, pathlib
    >>> from moai_llm.tokenizer.text_streams import resolve_inputs, iter_sources
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "corpus").mkdir()
    >>> _ = (d / "corpus" / "a.jsonl").write_text(json.dumps({"text": "first document"}) + "\\n")
    >>> _ = (d / "notes.txt").write_text("a line\\nanother line\\n")
    >>> sources = resolve_inputs([f"{d}/corpus/*.jsonl", f"{d}/notes.txt"])
    >>> texts = iter_sources(sources)
    >>> list(texts)
    ['first document', 'a line\\nanother line\\n']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from moai_llm.errors import MoaiInputError
from moai_llm.hub import cache_only_unless_reachable, hub_reachable
from moai_llm.progress import info

PLAIN_TEXT = {".txt", ".md", ".text"}
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


def resolve_inputs(specs: list[str], text_column: str | None = None) -> list[TextSource]:
    """Local files, folders and globs → one TextSource per file. Missing paths, empty files and
    folders without text files raise MoaiInputError (before any training starts)."""
    from moai_llm.data.sources import resolve_sources

    sources = []
    for spec in specs:
        for path in resolve_sources([spec])[0].files:
            sources.append(TextSource(str(path), path.stat().st_size, _opener(path, text_column)))
    return sources


def _opener(path: Path, column: str | None) -> Callable[[], Iterator[str]]:
    if path.suffix.lower() in PLAIN_TEXT:
        return lambda: _text_blocks(path)
    return lambda: _records(path, column)


def _records(path: Path, column: str | None) -> Iterator[str]:
    from moai_llm.data.sources import BadRows, Source, iter_records, text_column

    name = None
    try:
        for record, where in iter_records(Source(spec=str(path), files=[path]), BadRows(skip=False)):
            name = name or text_column(record, where, column)
            value = record.get(name)
            if isinstance(value, str):
                yield value
    except MoaiInputError as exc:  # same message; a hint with this command's flags
        hint = "pass --text-column NAME" if "column;" in str(exc) or "no column" in str(exc) else "fix or remove that row"
        raise MoaiInputError(str(exc), hint=hint) from None


def _text_blocks(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="strict", newline="") as f:  # -sig: a BOM is dropped
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
        raise MoaiInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                             hint="re-encode the file as UTF-8") from None


def hub_source(name: str, config: str | None = None, split: str = "train", text_column: str | None = None,
               max_samples: int | None = None) -> TextSource:
    """A hub dataset, streamed (nothing is downloaded whole). Fails with one line when the name
    is unknown or the hub cannot be reached; a dataset already in the local cache still works."""
    label = f"{name}" + (f" ({config})" if config else "")
    cache_only_unless_reachable()  # no minute of network retries before failing
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # unknown name, bad config, offline: all are bad input here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MoaiInputError(f"--dataset {label}: could not be loaded: {reason[:200]}",
                             hint="check the name and --dataset-config, or use --input with local files") from None

    def texts() -> Iterator[str]:
        from moai_llm.data.sources import text_column as pick

        name = None
        for n, record in enumerate(ds):
            if max_samples is not None and n >= max_samples:
                break
            name = name or pick(record, f"{label} record {n}", text_column)
            if isinstance(record.get(name), str):
                yield record[name]

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
