"""The prepared-dataset folder: Arrow shards written in batches, a manifest, memory-mapped loading.

    prepared/
      manifest.json          written last: its presence (with "complete": true) marks a finished build
      data-00000.arrow ...   Arrow IPC streams, columns input_ids / labels / position_ids (int32 lists)

`load_prepared(dir)` memory-maps the shards as one `datasets.Dataset`, so a training process
holds only the pages it reads.

A tiny folder built by `prepare_dataset`, then loaded:

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20, d / "tok", vocab_size=300)
    >>> import json
    >>> rows = [{"text": t} for t in ["hello world", "the quick brown fox"] * 10]
    >>> _ = (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> from moai_llm.data.prepare import prepare_dataset
    >>> _ = prepare_dataset([str(d / "corpus.jsonl")], tok, 64, d / "prepared")
    >>> ds = load_prepared(d / "prepared")
    >>> ds[0]["input_ids"][:4]  # doctest: +ELLIPSIS
    [..., ..., ..., ...]
    >>> len(ds[0]["input_ids"]) == len(ds[0]["labels"]) == 64
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from moai_llm.atomic import write_text_atomic
from moai_llm.errors import MoaiInputError
from moai_llm.ownership import MANIFEST  # the file that makes a folder a prepared dataset

FORMAT = "moai-prepared/1"
COLUMNS = ("input_ids", "labels", "position_ids")


ROW_BYTES_PER_TOKEN = 4 * len(COLUMNS)  # int32 input_ids, labels, position_ids
BATCH_BYTES = 32 << 20  # rows held before each write: 512 rows of 2048, fewer for long rows


def batch_rows_for(seq_len: int) -> int:
    """Rows per Arrow record batch: up to 512, and about BATCH_BYTES of rows at most."""
    return max(1, min(512, BATCH_BYTES // (seq_len * ROW_BYTES_PER_TOKEN)))


class ShardWriter:
    """Appends packed rows to Arrow shards, `batch_rows` rows per record batch (default:
    `batch_rows_for(seq_len)`, so the rows waiting to be written stay near BATCH_BYTES).

    `extra_columns`: more int32 list columns of any length per row (preference data's
    per-document pair_index / pair_role), given after the three fixed-length arrays of each row.
    """

    def __init__(self, folder: Path, seq_len: int, batch_rows: int | None = None, shard_bytes: int = 256 << 20,
                 extra_columns: tuple[str, ...] = ()):
        import pyarrow as pa

        self.folder = folder
        self.seq_len = seq_len
        self.batch_rows = batch_rows or batch_rows_for(seq_len)
        batch_rows = self.batch_rows
        self.rows_per_shard = max(batch_rows, shard_bytes // (seq_len * ROW_BYTES_PER_TOKEN))
        self.schema = pa.schema([(c, pa.list_(pa.int32())) for c in (*COLUMNS, *extra_columns)])
        self.shards: list[str] = []
        self.num_rows = 0
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._sink = self._writer = None
        self._in_shard = 0

    def add(self, row: tuple[np.ndarray, ...]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.batch_rows:
            self._write()

    def _write(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        if self._writer is None or self._in_shard >= self.rows_per_shard:
            self._close_shard()
            name = f"data-{len(self.shards):05d}.arrow"
            self.shards.append(name)
            self._sink = pa.OSFile(str(self.folder / name), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)
            self._in_shard = 0
        n = len(self._pending)
        offsets = pa.array(np.arange(0, (n + 1) * self.seq_len, self.seq_len, dtype=np.int32))
        columns = [pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([r[k] for r in self._pending])))
                   for k in range(len(COLUMNS))]
        for k in range(len(COLUMNS), len(self.schema)):  # variable-length columns: offsets from lengths
            parts = [np.asarray(r[k], dtype=np.int32) for r in self._pending]
            ends = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64).astype(np.int32)
            columns.append(pa.ListArray.from_arrays(pa.array(ends), pa.array(np.concatenate(parts), type=pa.int32())))
        self._writer.write_batch(pa.record_batch(columns, schema=self.schema))
        self.num_rows += n
        self._in_shard += n
        self._pending = []

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def close(self) -> None:
        self._write()
        self._close_shard()

    def abandon(self) -> None:
        """Close the open shard without writing what is pending (after an error: a deleted
        file's space is only freed once no handle holds it)."""
        self._pending = []
        if self._sink is not None:
            self._sink.close()
            self._writer = self._sink = None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a finished prepared dataset, or None when there is none (or it is partial)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict):
        raise MoaiInputError(f"{path}: not a moai manifest (a JSON object expected, found "
                             f"{type(manifest).__name__})", hint="prepare the dataset again with `moai data prepare`")
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        return None
    return manifest


def shard_paths(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[Path]:
    """The manifest's shard files, each resolved and required to lie inside `folder` (a name
    with `../`, an absolute path or a link out of the folder is refused: exit 2)."""
    folder = Path(folder)
    root = folder.resolve()
    names = manifest.get("shards")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise MoaiInputError(f"{folder / MANIFEST}: \"shards\" is not a list of file names",
                             hint="prepare the dataset again with `moai data prepare`")
    paths = []
    for name in names:
        path = (root / name).resolve()
        if Path(name).is_absolute() or root not in path.parents:
            raise MoaiInputError(f"{folder / MANIFEST}: shard {name!r} lies outside {folder}",
                                 hint="a prepared dataset reads only files inside its own folder; prepare it again")
        paths.append(path)
    return paths


def check_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> int:
    """Count the rows of the shards and check them against the manifest: `num_rows` equal, each
    input_ids row `seq_len` tokens long. Returns the number of rows. Reads batch headers only
    (the shards are memory-mapped)."""
    import pyarrow as pa

    folder = Path(folder)
    where = folder / MANIFEST
    seq_len, claimed = manifest.get("seq_len"), manifest.get("num_rows")
    for key, value in (("seq_len", seq_len), ("num_rows", claimed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "seq_len" else 0):
            raise MoaiInputError(f"{where}: \"{key}\" is {json.dumps(value)}, not a count",
                                 hint="prepare the dataset again with `moai data prepare`")
    rows = 0
    for path in shard_paths(folder, manifest):
        try:
            with pa.memory_map(str(path)) as source:
                for batch in pa.ipc.open_stream(source):
                    rows += batch.num_rows
                    if "input_ids" in batch.schema.names:
                        ids = batch.column("input_ids")
                        if len(ids.flatten()) != batch.num_rows * seq_len:
                            raise MoaiInputError(f"{path}: rows are not {seq_len} tokens long, as {where} says",
                                                 hint="prepare the dataset again with `moai data prepare`")
        except (OSError, pa.ArrowException) as exc:
            raise MoaiInputError(f"{path}: cannot be read as a prepared shard ({str(exc)[:120] or type(exc).__name__})",
                                 hint="the file is missing, cut short or damaged: prepare the dataset again") from None
    if rows != claimed:
        raise MoaiInputError(f"{where}: says {claimed} rows, its shards hold {rows}",
                             hint="prepare the dataset again with `moai data prepare`")
    return rows


def load_prepared(folder: str | os.PathLike):
    """The prepared rows as a memory-mapped `datasets.Dataset` (input_ids, labels, position_ids)."""
    import datasets

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise MoaiInputError(f"{folder}: not a prepared dataset (no complete manifest.json)",
                             hint="run `moai data prepare ... --output-dir` first")
    parts = [datasets.Dataset.from_file(str(path), in_memory=False) for path in shard_paths(folder, manifest)]
    if not parts:
        raise MoaiInputError(f"{folder}: the prepared dataset has no rows")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
