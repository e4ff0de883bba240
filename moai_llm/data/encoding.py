"""Tokenizing documents and conversations in batches with the fast (Rust) tokenizer.

`encode_batch` on the Rust backend tokenizes a whole batch, on several cores (rayon) when
allowed, and releases the GIL, so prepare.py reads and tokenizes the next batch in a thread
while the main thread packs and writes. Measured on the 2-core machine (60k reviews, 3
interleaved runs each): single-threaded Rust plus that overlap 3.0-4.9 s, Rust on both cores
3.8-5.7 s, so Rust's own threads are used only with cores to spare (more than 2).
Pretraining documents get the end-of-text id appended; conversations are tokenized with
character offsets so that labels can be set from the character spans that carry loss.

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20, d / "tok", vocab_size=300)
    >>> enc = Encoder(load_backend(tok))
    >>> docs = enc.documents(["one text", "another"])      # list of int32 arrays, eos appended
    >>> len(docs), docs[0].dtype, int(docs[0][-1]) == enc.eos_id
    (2, dtype('int32'), True)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from moai_llm.errors import MoaiInputError


@contextlib.contextmanager
def rust_parallelism(enabled: bool) -> Iterator[None]:
    """Let (or stop) the Rust tokenizer use every core for the duration of the block."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if enabled else "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _read_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    from moai_llm.jsonfile import read_json_object

    return read_json_object(path, hint="restore the file, or re-save the tokenizer")


def remote_code(config: dict) -> str | None:
    """What a tokenizer_config.json asks transformers to import (its `auto_map`), or None."""
    auto_map = config.get("auto_map")
    if not auto_map:
        return None
    entry = auto_map.get("AutoTokenizer", auto_map) if isinstance(auto_map, dict) else auto_map
    names = entry if isinstance(entry, (list, tuple)) else list(entry.values()) if isinstance(entry, dict) else [entry]
    return ", ".join(str(n) for n in names if n) or str(auto_map)


def check_tokenizer_folder(tokenizer_dir: str | os.PathLike, trust_remote_code: bool = False) -> None:
    """Refuse a --tokenizer that is missing, or defined only by Python code it ships (auto_map)
    unless `trust_remote_code`; say so when such code is present and ignored."""
    folder = Path(tokenizer_dir)
    if folder.exists() and not folder.is_dir():
        raise MoaiInputError(f"--tokenizer {tokenizer_dir}: is a file, not a tokenizer folder",
                             hint="pass the folder that holds tokenizer.json, not the file itself")
    if not folder.is_dir():
        raise MoaiInputError(f"--tokenizer {tokenizer_dir}: no such folder",
                             hint="pass a folder written by `moai tokenizer train` (or any HF tokenizer folder)")
    code = remote_code(_read_config(folder))
    if code is None or trust_remote_code:
        return
    if (folder / "tokenizer.json").is_file():
        from moai_llm.progress import info

        info(f"{folder}: tokenizer_config.json names Python code ({code}); moai does not run it "
             f"(only with --trust-remote-code) and reads tokenizer.json")
        return
    raise MoaiInputError(f"{folder}: the tokenizer is defined by Python code in the folder ({code}) and has no "
                         f"tokenizer.json; moai runs a folder's code only with --trust-remote-code",
                         hint="pass --trust-remote-code if you trust where this folder came from")


def load_backend(tokenizer_dir: str | os.PathLike, trust_remote_code: bool = False) -> SimpleNamespace:
    """The Rust tokenizer plus eos/pad ids and max length, without importing transformers.

    Pretraining needs nothing more, and skipping transformers (which imports torch) saves
    seconds and hundreds of MB per prepare. A folder's own tokenizer code (auto_map) is never
    run: tokenizer.json is read; only with `trust_remote_code` and no tokenizer.json is the folder
    loaded with transformers and its code.
    """
    from tokenizers import Tokenizer

    folder = Path(tokenizer_dir)
    config = _read_config(folder)
    file = folder / "tokenizer.json"
    if not file.is_file() and trust_remote_code and remote_code(config):
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
        if not hasattr(fast, "backend_tokenizer"):
            raise MoaiInputError(f"{folder}: its code builds a slow (Python) tokenizer; moai needs a fast one (tokenizer.json)")
        return SimpleNamespace(backend_tokenizer=fast.backend_tokenizer, eos_token_id=fast.eos_token_id,
                               pad_token_id=fast.pad_token_id, model_max_length=fast.model_max_length)
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise MoaiInputError(f"{file}: cannot be read as a tokenizer ({reason})",
                             hint="the file is damaged or cut short: copy or train the tokenizer again") from None

    def token_id(name: str) -> int | None:
        token = config.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        return backend.token_to_id(token) if token else None

    eos = token_id("eos_token")
    if eos is None and backend.token_to_id("<|endoftext|>") is not None:
        eos = backend.token_to_id("<|endoftext|>")
    pad = token_id("pad_token")
    return SimpleNamespace(backend_tokenizer=backend, eos_token_id=eos, pad_token_id=pad,
                           model_max_length=config.get("model_max_length"))


class Encoder:
    """Batch tokenization with a `PreTrainedTokenizerFast`'s Rust backend."""

    def __init__(self, tokenizer, eos_id: int | None = None):
        self.backend = tokenizer.backend_tokenizer
        self.eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
        if self.eos_id is None:
            raise MoaiInputError("the tokenizer has no end-of-text (eos) token", hint="use a tokenizer from `moai tokenizer train`")
        self._fast = hasattr(self.backend, "encode_batch_fast")  # tokenizers >= 0.20: ids without offsets

    def documents(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text followed by the end-of-text id (int32)."""
        encode = self.backend.encode_batch_fast if self._fast else self.backend.encode_batch
        out = []
        for enc in encode(texts, add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 1, dtype=np.int32)
            ids[:-1] = enc.ids
            ids[-1] = self.eos_id
            out.append(ids)
        return out

    def with_loss_spans(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, labels) per text: labels = ids for tokens that start inside a loss span, else -100."""
        out = []
        for enc, text_spans in zip(self.backend.encode_batch(texts, add_special_tokens=False), spans, strict=True):
            ids = np.asarray(enc.ids, dtype=np.int32)
            starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(ids))
            ends = np.fromiter((o[1] for o in enc.offsets), dtype=np.int64, count=len(ids))
            keep = np.zeros(len(ids), dtype=bool)
            for s, e in text_spans:
                keep |= (starts >= s) & (ends <= e) & (ends > starts)
            labels = np.where(keep, ids, -100).astype(np.int32)
            out.append((ids, labels))
        return out


def load_row_tokenizer(tokenizer_dir, seq_len: int, trust_remote_code: bool):
    """The tokenizer of `tokenizer_dir` for rows of `seq_len` tokens (its model_max_length must
    allow them)."""
    tokenizer = load_backend(tokenizer_dir, trust_remote_code=trust_remote_code)
    limit = tokenizer.model_max_length
    if isinstance(limit, int) and limit < 10**8 and seq_len > limit:
        raise MoaiInputError(f"--seq-len {seq_len}: longer than the tokenizer's model_max_length {limit}",
                             hint=f"use --seq-len {limit} or less")
    return tokenizer
