"""How much memory a `prepare_dataset` call needs, and how much disk its output takes, predicted
from the flags and the input files before anything is allocated.

Measured (benchmarks/bench_memory_guard.py, RESULTS.md) the memory a build adds is:

    LIBRARIES                                   pyarrow, the tokenizer, the reader thread
  + rows waiting to be written × seq_len × 24 B  3 int32 columns, and one copy while writing
  + buffered tokens × (4 B, 8 B for SFT)         ids (and labels) of the packing buffer
  + buffered documents × 800 B                   per-document objects of the buffer

Rows waiting: `batch_rows_for(seq_len)` (about 32 MiB of rows), and never more than the input
can fill. Buffered tokens: the packer's buffer (512 rows' worth, at most 2^26 tokens, plus the
quarter carried to the next buffer), and never more than the input holds, bounded by its size
(a byte-level token covers at least one byte). Buffered documents: those tokens over the input's
mean document length, estimated as the bytes per line of its first MiB over 4 bytes per token.

Hub sources and files too large to count have no bound: the buffer term is taken whole.

    >>> size = InputSize(bytes=14, records=1, bytes_per_record=14.0)
    >>> memory_need(2048, size) < memory_need(10**9, size)   # bytes; grows with seq_len
    True
    >>> memory_need(10**9, size) > 20 * 2**30   # one row of 10^9 tokens: 3 columns, int32, a copy
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from moai_llm.data.packing import MAX_BUFFER_TOKENS
from moai_llm.data.store import ROW_BYTES_PER_TOKEN, batch_rows_for

LIBRARIES = 85 << 20
WRITE_COPIES = 2  # the rows, and their concatenation per column when a batch is written
DOC_OVERHEAD = 800
# The longest row prepared without --max-positions: about a million tokens, the context of the
# longest-context open models (Qwen2.5-1M). Beyond it a --seq-len is more likely a typo than a
# plan; a model with more positions says so with --max-positions.
MAX_SEQ_LEN = 1 << 20
_COUNT_BYTES = 64 << 20  # files up to this size have their lines counted exactly
_PEEK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputSize:
    """Bounds on what the sources hold: bytes (None: unknown), records (None: unknown) and the
    mean bytes per record of what was looked at (None: nothing was)."""

    bytes: int | None
    records: int | None
    bytes_per_record: float | None


def measure_input(sources) -> InputSize:
    """Bounds for a list of `moai_llm.data.sources.Source` (weights applied), cheaply: sizes,
    Parquet metadata, line counts of files under 64 MiB, the first MiB of larger ones."""
    total, records, seen_bytes, seen_records = 0, 0, 0, 0
    for source in sources:
        if source.is_hub:
            return InputSize(None, None, seen_bytes / seen_records if seen_records else None)
        passes = math.ceil(source.weight)
        for path in source.files:
            size, count, peek = _file_bounds(Path(path))
            total += size * passes
            records = None if records is None or count is None else records + count * passes
            if peek:
                seen_bytes += peek[0]
                seen_records += peek[1]
    return InputSize(total, records, seen_bytes / seen_records if seen_records else None)


def _file_bounds(path: Path) -> tuple[int, int | None, tuple[int, int] | None]:
    """(bytes of text, records or None, (bytes, records) of a sample or None) for one file."""
    size = path.stat().st_size
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return raw, meta.num_rows, (raw, max(1, meta.num_rows))
        except Exception:  # a corrupt file is reported by the reader, with its name
            return size, None, None
    if suffix == ".arrow":
        return size, None, None
    with open(path, "rb") as fh:
        head = fh.read(min(size, _COUNT_BYTES if size <= _COUNT_BYTES else _PEEK_BYTES))
    lines = max(1, head.count(b"\n") + (0 if head.endswith(b"\n") else 1))
    if size <= _COUNT_BYTES and suffix != ".json":  # a .json array is one text: records unknown
        return size, lines, (len(head), lines)
    return size, None, (len(head), lines)


def memory_need(seq_len: int, size: InputSize, mode: str = "pretrain") -> int:
    """Predicted bytes a build adds to the process (see the module docstring)."""
    buffer = min(max(seq_len * 512, 1 << 21), max(MAX_BUFFER_TOKENS, seq_len))
    tokens = int(buffer * 1.25)
    if size.bytes is not None:
        tokens = min(tokens, size.bytes + (size.records or 0))
    docs_per_token = 4.0 / size.bytes_per_record if size.bytes_per_record else 1 / 64
    docs = int(tokens * min(0.5, docs_per_token))
    if size.records is not None:
        docs = min(docs, size.records)
    # Rows come from pieces: a document of n tokens is at most 1 + (n - 1) // seq_len pieces.
    rows = batch_rows_for(seq_len)
    if size.records is not None and size.bytes is not None:
        rows = min(rows, size.records + (size.bytes + size.records) // seq_len)
    per_token = 4 if mode == "pretrain" else 8  # sft and preference documents carry labels too
    return (LIBRARIES + rows * seq_len * ROW_BYTES_PER_TOKEN * WRITE_COPIES
            + tokens * per_token + docs * DOC_OVERHEAD)


def disk_estimate(size: InputSize) -> float | None:
    """A rough size of the prepared output: 12 bytes a token slot, about 4 bytes of text per
    token (None when the input size is unknown; inf when --weights make it unbounded).
    `moai data prepare` refuses to start when it exceeds the free space."""
    if size.bytes is None:
        return None
    if size.bytes != size.bytes or size.bytes == float("inf"):
        return float("inf")
    return size.bytes // 4 * ROW_BYTES_PER_TOKEN
