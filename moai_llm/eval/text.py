"""Held-out text as packed rows, ready to be scored for bits per byte.

How documents are laid out, and why:
- pretraining rows (`moai_llm.data`) hold each document's tokens followed by the end-of-text id
  (`data.encoding.Encoder.documents`), so the token a model saw right before every document is
  that separator. Here each document becomes `[separator] + tokens`: its first token is
  predicted from the separator and every token of the text is predicted exactly once. The
  trailing separator is not scored: it carries no byte of the text (lm-evaluation-harness's
  rolling log-likelihood scores the same tokens, from the same prefix token).
- a document longer than a row is cut into windows (`windows`): the first holds `seq_len`
  tokens; each next one scores the next `stride` tokens after as much of the preceding text as
  fits in the row. `stride = seq_len - 1` (the default) leaves one token of context: disjoint
  windows, as lm-eval's wikitext does. A smaller stride gives every scored token more context
  (a lower, better-estimated figure) at seq_len/stride times the compute. Each token is scored
  in exactly one window, so each byte counts once.
- windows are packed several to a row (best fit decreasing, `moai_llm.data.packing`) with
  position_ids restarting per window, so the model scores each as its own document (attention
  never crosses a window boundary). Rows have training's shape: `input_ids`, `labels` (-100
  where nothing is scored; unshifted, the model shifts), `position_ids`, all `seq_len` long.

Bits per byte = the summed negative log-likelihood in nats / (ln 2 x the UTF-8 bytes of the
documents), so it compares models whose tokenizers differ (`scoring.score_rows`).

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20,
    ...                       pathlib.Path(tempfile.mkdtemp()) / "tok", vocab_size=300)
    >>> text = pack_texts(["hello world", "the quick brown fox jumps"], tok, seq_len=16)
    >>> text.documents, text.bytes, text.input_ids.shape[1], text.tokens == int((text.labels != -100).sum())
    (2, 36, 16, True)
    >>> list(windows(40, seq_len=16, stride=15))    # (start, end, first scored) in [sep] + 40 tokens
    [(0, 16, 1), (15, 31, 16), (25, 41, 31)]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moai_llm.errors import MoaiInputError

TEXT_BATCH = 2048  # documents per tokenizer call


@dataclass
class EvalText:
    """Packed rows of held-out text plus what they hold; `scoring.score_rows` scores them."""

    input_ids: np.ndarray  # [rows, seq_len] int32
    labels: np.ndarray  # [rows, seq_len] int32; -100 where no token is scored
    position_ids: np.ndarray  # [rows, seq_len] int32; restart at 0 per window
    bytes: int  # UTF-8 bytes of the documents (the denominator of bits per byte)
    tokens: int  # tokens scored, each once
    documents: int
    windows: int
    seq_len: int
    stride: int
    separator_id: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def summary(self) -> dict[str, Any]:
        """Counts and settings, for reports (no arrays)."""
        return {"documents": self.documents, "bytes": self.bytes, "tokens": self.tokens,
                "windows": self.windows, "rows": len(self), "seq_len": self.seq_len,
                "stride": self.stride, "separator_id": self.separator_id}


def windows(n_tokens: int, seq_len: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, first_scored) slices of `[separator] + n_tokens tokens` that score every
    token once: slice [start, end) is one row segment, tokens [first_scored, end) are scored."""
    if seq_len < 2 or not 1 <= stride <= seq_len - 1:
        raise ValueError(f"need seq_len >= 2 and 1 <= stride <= seq_len - 1 (got {seq_len}, {stride})")
    scored, total = 1, n_tokens + 1
    end = min(total, seq_len)  # the first window: the separator and seq_len - 1 tokens
    while scored < total:
        start = max(0, end - seq_len)
        yield start, end, scored
        scored = end
        end = min(total, scored + stride)


def _encoder(tokenizer: Any):
    from moai_llm.data.encoding import Encoder, load_backend

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_backend(tokenizer)
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise TypeError("tokenizer: pass a tokenizer folder or a fast (Rust-backed) tokenizer")
    return Encoder(tokenizer), getattr(tokenizer, "pad_token_id", None)


def pack_texts(texts: Iterable[str], tokenizer: Any, seq_len: int, stride: int | None = None) -> EvalText:
    """Tokenize `texts` (documents), cut long ones into windows and pack them into rows.

    `tokenizer` is a tokenizer folder or a fast tokenizer object; its end-of-text id is the
    separator (as in `moai data prepare`). `stride` defaults to `seq_len - 1`.
    """
    from moai_llm.data.packing import Doc, build_rows, pack_bins

    stride = seq_len - 1 if stride is None else int(stride)
    if seq_len < 2:
        raise MoaiInputError(f"--seq-len {seq_len}: a row must hold at least 2 tokens")
    if not 1 <= stride <= seq_len - 1:
        raise MoaiInputError(f"--stride {stride}: must be between 1 and seq_len - 1 = {seq_len - 1}")
    encoder, pad_id = _encoder(tokenizer)
    sep = int(encoder.eos_id)
    segments: list[Doc] = []
    n_bytes = n_docs = n_tokens = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal n_bytes, n_docs, n_tokens
        for text, ids in zip(batch, encoder.documents(batch), strict=True):
            ids[1:] = ids[:-1].copy()  # documents() appends the separator; move it to the front
            ids[0] = sep
            if len(ids) < 2:
                continue
            n_docs += 1
            n_bytes += len(text.encode("utf-8"))
            n_tokens += len(ids) - 1
            for start, end, scored in windows(len(ids) - 1, seq_len, stride):
                labels = ids[start:end].copy()
                labels[: scored - start] = -100
                segments.append(Doc(ids[start:end], labels, 0))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= TEXT_BATCH:
            flush()
    flush()
    if not segments:
        raise MoaiInputError("no text to score: every document is empty")
    bins = pack_bins([len(s.ids) for s in segments], seq_len)
    rows = list(build_rows([[segments[i] for i in b] for b in bins], seq_len, sep if pad_id is None else int(pad_id)))
    input_ids, labels, positions = (np.stack(col) for col in zip(*rows, strict=True))
    return EvalText(input_ids=input_ids, labels=labels, position_ids=positions, bytes=n_bytes,
                    tokens=n_tokens, documents=n_docs, windows=len(segments), seq_len=seq_len,
                    stride=stride, separator_id=sep)


# ---------------------------------------------------------------- reading documents


def _is_local(spec: str) -> bool:
    from moai_llm.data.sources import EXTENSIONS

    path = Path(spec).expanduser()
    return path.exists() or any(ch in spec for ch in "*?[") or path.suffix.lower() in EXTENSIONS


def read_texts(sources: str | list[str], text_column: str | None = None, *, split: str = "test",
               config: str | None = None, max_documents: int | None = None) -> list[str]:
    """Documents of `sources`: files, folders, globs (as `moai data prepare --input`) or hub
    dataset names (streamed; `config`, `split`). Empty documents are skipped; a source with no
    text at all is refused.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "held.jsonl"
    >>> _ = f.write_text('{"body": "one"}\\n{"body": " "}\\n{"body": "two"}\\n')
    >>> read_texts(str(f), text_column="body")
    ['one', 'two']
    """
    from moai_llm.data import sources as src_mod

    specs = [sources] if isinstance(sources, str) else list(sources)
    if not specs:
        raise MoaiInputError("--text: no source given")
    texts: list[str] = []
    for spec in specs:
        if _is_local(spec):
            found = _source_texts(src_mod.resolve_sources([spec])[0], text_column, max_documents and max_documents - len(texts))
        else:
            hub = src_mod.resolve_sources(None, dataset=spec, dataset_config=config, split=split)[0]
            try:
                found = _source_texts(hub, text_column, max_documents and max_documents - len(texts))
            except MoaiInputError as exc:
                if "column" in str(exc):
                    raise
                raise MoaiInputError(f"--text {spec}: no such file or folder, and as a hub dataset: "
                                     f"{str(exc).split(': ', 1)[-1]}",
                                     hint="check the path or the hub name; offline, download the text "
                                          "elsewhere and pass its files with --text") from exc
        if not found:
            raise MoaiInputError(f"--text {spec}: no text to score (every document is empty)",
                                 hint="point --text at held-out text, or name its column with --text-column")
        texts.extend(found)
        if max_documents and len(texts) >= max_documents:
            break
    return texts


def _source_texts(source, given_column: str | None, limit: int | None) -> list[str]:
    from moai_llm.data import sources as src_mod

    out: list[str] = []
    column: str | None = None
    bad = src_mod.BadRows(skip=False)
    for record, where in src_mod.iter_records(source, bad):
        if column is None:
            column = src_mod.text_column(record, where, given_column)
        text = record.get(column)
        if not isinstance(text, str):
            bad.bad(where, f"no text in column '{column}' (found {type(text).__name__})")
            continue
        if text.strip():
            out.append(text)
            if limit and len(out) >= limit:
                break
    return out


def prepare_eval_text(source: str | list[str], tokenizer: Any, seq_len: int, *, stride: int | None = None,
                      text_column: str | None = None, split: str = "test", config: str | None = None,
                      max_documents: int | None = None) -> EvalText:
    """Read `source` and pack it for scoring: once, before training or evaluation starts.

    rows = prepare_eval_text("held_out.jsonl", "tokenizers/moai-8k", seq_len=2048)
    Every process of a run may call it: reading and packing are deterministic, so all get the
    same rows (and `score_rows` gives each its share).
    """
    texts = read_texts(source, text_column, split=split, config=config, max_documents=max_documents)
    return pack_texts(texts, tokenizer, seq_len, stride)
