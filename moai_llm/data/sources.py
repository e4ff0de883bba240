"""Sources: what a user points `moai data prepare` at, read as a stream of records.

A source is a local file, a folder or a glob of `.jsonl/.json/.csv/.parquet/.txt/.arrow`
files, or a hub dataset (`datasets.load_dataset(name, config, split=..., streaming=True)`, so a
large corpus is never downloaded into memory). Each source carries a mixing weight. Records
come out one at a time with their location ("reviews.jsonl:17") so that a bad row is reported
by file and line; `skip_bad_rows=True` counts and skips bad rows instead. JSON is parsed with
orjson. Fingerprints (size, mtime and content hashes) tell the cache whether a file changed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "reviews.jsonl").write_text('{"text": "good"}\\n{"text": "bad"}\\n')
    >>> srcs = resolve_sources([str(d / "*.jsonl")], weights=[1.0])
    >>> for record, where in iter_records(srcs[0], BadRows(skip=False)):
    ...     print(record, where.rsplit("/", 1)[-1])
    {'text': 'good'} reviews.jsonl:1
    {'text': 'bad'} reviews.jsonl:2
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from moai_llm.errors import MoaiInputError

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow")
# Column names that hold the document text in common corpora, in order of preference.
TEXT_COLUMNS = ("text", "content", "document", "body", "article", "passage", "raw_content", "sentence")
# Head and tail bytes hashed on every cache check: cheap for huge files, exact for small ones.
_PROBE_BYTES = 1 << 20


@dataclass
class Source:
    """One input: local files (already expanded) or a hub dataset, with its mixing weight."""

    spec: str  # what the user typed
    files: list[Path] = field(default_factory=list)
    weight: float = 1.0
    dataset: str | None = None  # hub dataset name (or anything datasets.load_dataset accepts)
    config: str | None = None
    split: str = "train"

    @property
    def is_hub(self) -> bool:
        return self.dataset is not None


class BadRows:
    """Policy and count for malformed rows: raise on the first one, or skip and count."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.count = 0
        self.first: str | None = None

    def bad(self, where: str, why: str) -> None:
        if not self.skip:
            raise MoaiInputError(f"{where}: {why}", hint="fix the row, or pass --skip-bad-rows to count and skip bad rows")
        self.count += 1
        self.first = self.first or f"{where}: {why}"


def resolve_sources(
    inputs: list[str] | None = None,
    weights: list[float] | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
) -> list[Source]:
    """Expand paths, folders and globs into Sources; `dataset` adds a hub source last.

    `weights` gives one multiplier per source (inputs first, then the dataset): 1 reads a
    source once, 2 twice, 0.5 keeps a deterministic half of its documents.
    """
    sources: list[Source] = []
    for spec in inputs or []:
        sources.append(Source(spec=spec, files=_expand(spec)))
    if dataset:
        sources.append(Source(spec=dataset, dataset=dataset, config=dataset_config, split=split))
    if not sources:
        raise MoaiInputError("no input given", hint="pass --input FILE (repeatable) or --dataset NAME")
    if weights:
        if len(weights) != len(sources):
            raise MoaiInputError(
                f"--weights has {len(weights)} values for {len(sources)} sources",
                hint="give one weight per --input (and one for --dataset)",
            )
        for src, w in zip(sources, weights, strict=True):
            if not (w > 0 and math.isfinite(w)):
                raise MoaiInputError(f"--weights {w:g} for {src.spec}: a weight must be a positive, finite number",
                                     hint="1 reads a source once, 2 twice, 0.5 keeps half of it")
            src.weight = float(w)
    return sources


def _expand(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        files = [p for p in files if p.stat().st_size > 0]  # empty files inside a folder are skipped
        if not files:
            raise MoaiInputError(f"{spec}: no {'/'.join(EXTENSIONS)} files in this folder")
        return files
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise MoaiInputError(f"{spec}: the pattern matches no file")
        files = [p for p in files if p.stat().st_size > 0] or files  # like folders: skip empty files
        return [_check_file(p) for p in files]
    if not path.exists():
        raise MoaiInputError(f"{spec}: no such file or folder", hint="check the path given to --input")
    return [_check_file(path)]


# Leading bytes of files that are not text, whatever their name says.
_NOT_TEXT = ((b"\x1f\x8b", "gzip-compressed", "gunzip it first"),
             (b"(\xb5/\xfd", "zstd-compressed", "decompress it first (zstd -d)"),
             (b"BZh", "bzip2-compressed", "decompress it first (bunzip2)"),
             (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz)"),
             (b"PK\x03\x04", "a zip archive", "unzip it first"),
             (b"\xff\xfe", "UTF-16 text", "re-encode it as UTF-8"),
             (b"\xfe\xff", "UTF-16 text", "re-encode it as UTF-8"))
_TEXT_FORMATS = (".jsonl", ".json", ".csv", ".txt")


def _check_file(path: Path) -> Path:
    if path.suffix.lower() not in EXTENSIONS:
        raise MoaiInputError(f"{path}: unsupported file type '{path.suffix}'", hint=f"use one of {', '.join(EXTENSIONS)}")
    if not path.is_file():  # a FIFO, socket or device: no size, and moai reads a source more than once
        import stat

        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(path.stat().st_mode) else "not a regular file"
        raise MoaiInputError(f"{path}: is {kind}; moai reads inputs from regular files",
                             hint="write the data to a file first and pass that")
    if path.stat().st_size == 0:
        raise MoaiInputError(f"{path}: the file is empty", hint="remove it from --input or give a file with data")
    if path.suffix.lower() in _TEXT_FORMATS:
        with open(path, "rb") as fh:
            head = fh.read(8)
        for magic, what, fix in _NOT_TEXT:
            if head.startswith(magic):
                raise MoaiInputError(f"{path}: the file is {what}, not {path.suffix} text", hint=fix)
    return path


# ---------------------------------------------------------------- reading records


def iter_records(source: Source, bad: BadRows) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield (record, location) for every row of a source, streaming."""
    if source.is_hub:
        yield from _iter_hub(source)
        return
    for path in source.files:
        yield from iter_file(path, bad)


def iter_file(path: Path, bad: BadRows, span: tuple[int, int] | None = None,
              progress: Any = None) -> Iterator[tuple[dict[str, Any], str]]:
    """The records of one file; `span` (.jsonl/.txt only): the lines starting in that byte range."""
    reader = _READERS[path.suffix.lower()]
    yield from (reader(path, bad, span, progress) if span else reader(path, bad))


def _iter_hub(source: Source) -> Iterator[tuple[dict[str, Any], str]]:
    from moai_llm.hub import cache_only_unless_reachable

    cache_only_unless_reachable()  # offline: the cache or one line at once, not a minute of retries
    import datasets

    try:
        ds = datasets.load_dataset(source.dataset, source.config, split=source.split, streaming=True)
    except FileNotFoundError as exc:
        raise MoaiInputError(f"--dataset {source.dataset}: not found ({exc})", hint="check the name, or download it and pass --input") from exc
    except ValueError as exc:  # unknown config or split
        raise MoaiInputError(f"--dataset {source.dataset}: {exc}", hint="check --dataset-config and --split") from exc
    except Exception as exc:  # network errors surface here when the hub is unreachable
        if type(exc).__name__ in ("ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "HfHubHTTPError"):
            raise MoaiInputError(f"--dataset {source.dataset}: the hub is unreachable ({type(exc).__name__})",
                                 hint="download the dataset elsewhere and pass its files with --input") from exc
        raise
    name = source.dataset + (f"/{source.config}" if source.config else "")
    for i, record in enumerate(ds):
        yield record, f"{name}[{source.split}][{i}]"


def _decode(raw: bytes, where: str, bad: BadRows) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad.bad(where, f"bytes that are not UTF-8 at byte {exc.start} (re-encode the file as UTF-8)")
        return None


def _read_jsonl(path: Path, bad: BadRows, span: tuple[int, int] | None = None,
                progress: Any = None) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, "rb") as fh:
        for lineno, raw in numbered_lines(fh, span, progress):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # written by some Windows tools
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if _decode(raw, where, bad) is None:
                    continue
                bad.bad(where, f"malformed JSON ({exc})")
                continue
            if not isinstance(record, dict):
                bad.bad(where, f"expected a JSON object, found {type(record).__name__}")
                continue
            yield record, where


def _read_json(path: Path, bad: BadRows) -> Iterator[tuple[dict[str, Any], str]]:
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if raw.lstrip()[:1] == b"{":  # a .json file that is really JSON lines
            yield from _read_jsonl(path, bad)
            return
        if _decode(raw, str(path), bad) is None:
            return
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            line = raw[: exc.pos].count(b"\n") + 1
            raise MoaiInputError(f"{path}:{line}: malformed JSON ({exc})", hint="fix the file (a .json file is parsed as a whole)") from exc
    if isinstance(data, dict):  # {"data": [...]} / {"train": [...]}: the first list of records
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if lists and not any(isinstance(v, str) for v in data.values()) else [data]
    if not isinstance(data, list):
        raise MoaiInputError(f"{path}: expected a list of JSON objects, found {type(data).__name__}")
    for i, record in enumerate(data):
        where = f"{path}:[{i}]"
        if not isinstance(record, dict):
            bad.bad(where, f"expected a JSON object, found {type(record).__name__}")
            continue
        yield record, where


def _read_csv(path: Path, bad: BadRows) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, newline="", encoding="utf-8-sig", errors="strict") as fh:
        reader = csv.DictReader(fh)
        try:
            for record in reader:
                yield record, f"{path}:{reader.line_num}"
        except UnicodeDecodeError as exc:
            raise MoaiInputError(f"{path}:{reader.line_num + 1}: bytes that are not UTF-8", hint="re-encode the file as UTF-8") from exc
        except csv.Error as exc:
            raise MoaiInputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


def _read_txt(path: Path, bad: BadRows, span: tuple[int, int] | None = None,
              progress: Any = None) -> Iterator[tuple[dict[str, Any], str]]:
    # One document per line: streaming-friendly and the usual layout of text dumps.
    with open(path, "rb") as fh:
        for lineno, raw in numbered_lines(fh, span, progress):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            text = _decode(raw, f"{path}:{lineno}", bad)
            if text is not None and text.strip():
                yield {"text": text.rstrip("\r\n")}, f"{path}:{lineno}"


def _damaged(path: Path, kind: str, row: int, exc: Exception) -> MoaiInputError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    at = f" after row {row - 1}" if row else ""
    return MoaiInputError(f"{path}: not a readable {kind} file{at} ({reason})",
                          hint="the file is damaged or cut short: copy or export it again")


def _read_parquet(path: Path, bad: BadRows) -> Iterator[tuple[dict[str, Any], str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                yield record, f"{path}:row {row}"
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(path, "Parquet", row, exc) from None


def _read_arrow(path: Path, bad: BadRows) -> Iterator[tuple[dict[str, Any], str]]:
    import pyarrow as pa

    row = 0
    try:
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)  # what datasets writes
                batches = iter(reader)
            except pa.ArrowInvalid:
                source.seek(0)
                fr = pa.ipc.open_file(source)
                batches = (fr.get_batch(i) for i in range(fr.num_record_batches))
            for batch in batches:
                for record in batch.to_pylist():
                    yield record, f"{path}:row {row}"
                    row += 1
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(path, "Arrow", row, exc) from None


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".txt": _read_txt,
            ".parquet": _read_parquet, ".arrow": _read_arrow}


# One line (or one record's text) above this is refused before it is tokenized: a 50 MB line
# took 6.8 GiB to tokenize in issue #22's report (~140 bytes of tokenizer buffers per input byte), and
# split into documents of a few MB it trains the same.
MAX_RECORD_BYTES = 8 << 20


def record_too_long(where: str) -> MoaiInputError:
    """The error for a line or record over MAX_RECORD_BYTES."""
    return MoaiInputError(f"{where}: one record is longer than {MAX_RECORD_BYTES >> 20} MiB, the limit for a "
                          "line or record", hint="split the document into several lines or records")


def text_column(record: dict[str, Any], where: str, given: str | None) -> str:
    """The column holding the document text: `given`, else the first known name present (one
    longer than MAX_RECORD_BYTES characters is refused)."""
    name = _text_column(record, where, given)
    value = record.get(name)
    if isinstance(value, str) and len(value) > MAX_RECORD_BYTES:
        raise record_too_long(where)
    return name


def _text_column(record: dict[str, Any], where: str, given: str | None) -> str:
    if given:
        if given not in record:
            raise MoaiInputError(f"{where}: no column '{given}'; columns found: {', '.join(map(str, record)) or '(none)'}",
                                 hint="pass the right name with --text-column")
        return given
    for name in TEXT_COLUMNS:
        if isinstance(record.get(name), str):
            return name
    present = [name for name in TEXT_COLUMNS if name in record]
    if present:
        raise MoaiInputError(f"{where}: {not_text(present[0], record[present[0]])}",
                             hint="fix the row, or pass --text-column NAME for a column that holds text")
    raise MoaiInputError(f"{where}: no text column; columns found: {', '.join(map(str, record)) or '(none)'}",
                         hint="pass --text-column NAME (or --mode sft for instruction data)")


def not_text(column: str, value: Any) -> str:
    """Why a column's value is not a document: "column 'text' is null" / "holds a number (int)"."""
    if value is None:
        return f"column '{column}' is null, not text"
    kind = ("a number" if isinstance(value, (int, float)) and not isinstance(value, bool)
            else "a list" if isinstance(value, list) else "an object" if isinstance(value, dict)
            else "a boolean" if isinstance(value, bool) else "a value")
    return f"column '{column}' holds {kind} ({type(value).__name__}), not text"


# ---------------------------------------------------------------- fingerprints


def _probe_hash(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        h.update(fh.read(_PROBE_BYTES))
        if size > 2 * _PROBE_BYTES:
            fh.seek(size - _PROBE_BYTES)
            h.update(fh.read(_PROBE_BYTES))
        elif size > _PROBE_BYTES:
            h.update(fh.read())
    return h.hexdigest()


def full_hash(path: Path) -> str:
    """blake2b of the whole file (taken at build time; used when only the mtime changed)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(source: Source, full: bool = False) -> dict[str, Any]:
    """What identifies a source's content: per file size, mtime and a head/tail hash.

    Hub sources are identified by name, config and split (pin a revision in the name's
    config if the dataset changes upstream).
    """
    if source.is_hub:
        return {"spec": source.spec, "dataset": source.dataset, "config": source.config,
                "split": source.split, "weight": source.weight}
    files = []
    for path in source.files:
        st = path.stat()
        entry = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "probe": _probe_hash(path, st.st_size)}
        if full:
            entry["blake2b"] = full_hash(path)
        files.append(entry)
    return {"spec": source.spec, "files": files, "weight": source.weight}


def same_content(stored: dict[str, Any], source: Source) -> bool:
    """True when a source still has the content recorded in `stored` (a manifest entry)."""
    now = fingerprint(source)
    if source.is_hub or "files" not in stored:
        return now == {k: stored.get(k) for k in now}
    if len(now["files"]) != len(stored["files"]) or now["weight"] != stored.get("weight"):
        return False
    for cur, old in zip(now["files"], stored["files"], strict=True):
        if (cur["path"], cur["size"], cur["probe"]) != (old["path"], old["size"], old["probe"]):
            return False
        # Same size and ends but touched: a full hash decides (a fresh clone touches everything).
        if cur["mtime_ns"] != old["mtime_ns"] and full_hash(Path(cur["path"])) != old.get("blake2b"):
            return False
    return True


_COUNT_CHUNK = 4 << 20  # bytes read at a time to count the lines before a share


def numbered_lines(fh: BinaryIO, span: tuple[int, int] | None = None,
                   progress: Any = None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of the lines of `fh` that start in the byte range `span`."""
    start, end = span or (0, None)
    lineno, at = 1, 0
    if start > 0:
        fh.seek(start - 1)
        fh.readline()  # the line running through `start` belongs to the share before
        at = fh.tell()
        fh.seek(0)
        left = at
        while left > 0:
            chunk = fh.read(min(_COUNT_CHUNK, left))
            if not chunk:
                break
            lineno += chunk.count(b"\n")
            left -= len(chunk)
        fh.seek(at)
    limit = MAX_RECORD_BYTES
    while end is None or at < end:
        raw = fh.readline(limit + 1)  # never more than one record's limit in memory
        if not raw:
            break
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise record_too_long(f"{getattr(fh, 'name', 'the file')}:{lineno}")
        yield lineno, raw
        lineno += 1
        at += len(raw)
        if progress is not None:
            progress.bytes += len(raw)
