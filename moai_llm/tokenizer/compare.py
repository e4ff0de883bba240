"""Compare tokenizers on held-out text: compression, fallback to raw bytes, speed.

For each tokenizer folder (or tokenizer.json) and each text set (a language of the embedded
corpora by default, or the user's files), `compare_tokenizers` reports:

- chars_per_token, bytes_per_token (UTF-8) and tokens_per_word (whitespace words): compression;
- byte_fallback: share of tokens that are not whole characters (a byte-level token holding part
  of a UTF-8 character, or a `<0xNN>` byte-fallback token): how often the vocabulary fails a script;
- round_trip: share of texts with decode(encode(text)) == text;
- encode_mb_s: encode throughput in MB of UTF-8 per second (batch encode, this machine).

    >>> import itertools, tempfile, pathlib
    >>> from moai_llm import corpora
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ko_texts = list(itertools.islice(corpora.iter_texts("ko", split="heldout"), 20))
    >>> a = train_tokenizer(ko_texts, d / "a", vocab_size=300)
    >>> b = train_tokenizer(ko_texts, d / "b", vocab_size=600)
    >>> rows = compare_tokenizers([d / "a", d / "b"], {"ko": ko_texts})
    >>> [(r["tokenizer"], r["set"], r["round_trip"]) for r in rows]
    [('a', 'ko', 1.0), ('b', 'ko', 1.0)]
    >>> rows[1]["chars_per_token"] > rows[0]["chars_per_token"]
    True
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer.bytelevel import unicode_to_bytes

BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def find_tokenizers(root: str | os.PathLike = "tokenizers") -> list[Path]:
    """Every folder under `root` holding a tokenizer.json (the default set for compare)."""
    base = Path(root)
    if not base.is_dir():
        raise MoaiInputError(f"{base}: no such folder, so no tokenizers to compare",
                             hint="pass tokenizer folders, or train one with `moai tokenizer train`")
    found = sorted({p.parent for p in base.rglob("tokenizer.json") if not any(
        part.startswith(".") for part in p.relative_to(base).parts)})
    if not found:
        raise MoaiInputError(f"{base}: holds no tokenizer folders (no tokenizer.json)",
                             hint="pass tokenizer folders, or train one with `moai tokenizer train`")
    return found


def _load(path: str | os.PathLike, trust_remote_code: bool = False):
    from tokenizers import Tokenizer

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if p.is_dir():
        from moai_llm.data.encoding import check_tokenizer_folder, load_backend

        check_tokenizer_folder(p, trust_remote_code)  # says when code it names is ignored
        if trust_remote_code and not file.is_file():
            return load_backend(p, trust_remote_code=True).backend_tokenizer
    if not file.is_file():
        raise MoaiInputError(f"{path}: not a tokenizer folder (no tokenizer.json)",
                             hint="give a folder written by `moai tokenizer train` or any HF tokenizer folder")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:
        raise MoaiInputError(f"{file}: cannot be read as a tokenizer ({str(exc).splitlines()[0][:120]})") from None


def _fallback_table(tok) -> list[bool]:
    """For each id: is the token a raw byte / part of a character rather than whole characters?"""
    to_byte = unicode_to_bytes()
    vocab = tok.get_vocab(with_added_tokens=True)
    table = [False] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        if BYTE_TOKEN.match(token):
            table[i] = True
        elif all(c in to_byte for c in token):
            try:
                bytes(to_byte[c] for c in token).decode("utf-8")
            except UnicodeDecodeError:
                table[i] = True
    return table


def measure(tok, texts: list[str]) -> dict:
    """Compression, byte fallback, round-trip and speed of one tokenizer on one text set."""
    tok.encode_batch(texts[:16], add_special_tokens=False)  # warm-up: thread pool, caches
    start = time.perf_counter()
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    rounds = 1
    while time.perf_counter() - start < 0.25:  # small sets: repeat so the rate is not all overhead
        tok.encode_batch(texts, add_special_tokens=False)
        rounds += 1
    seconds = max(time.perf_counter() - start, 1e-9)
    ids = [e.ids for e in encodings]
    tokens = sum(len(x) for x in ids) or 1
    chars = sum(map(len, texts))
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    words = sum(len(t.split()) for t in texts) or 1
    table = _fallback_table(tok)
    fallback = sum(table[i] for x in ids for i in x if i < len(table))
    same = sum(d == t for d, t in zip(tok.decode_batch(ids, skip_special_tokens=False), texts, strict=True))
    return {
        "chars_per_token": chars / tokens,
        "bytes_per_token": nbytes / tokens,
        "tokens_per_word": tokens / words,
        "byte_fallback": fallback / tokens,
        "round_trip": same / max(len(texts), 1),
        "encode_mb_s": rounds * nbytes / 1e6 / seconds,
        "tokens": tokens,
    }


def compare_tokenizers(paths: Iterable[str | os.PathLike], text_sets: dict[str, list[str]],
                       trust_remote_code: bool = False) -> list[dict]:
    """One row per (tokenizer, text set): name, path, vocab_size, set, and `measure`'s figures.
    A folder's own Python code (auto_map) runs only with `trust_remote_code`."""
    rows = []
    for path in paths:
        tok = _load(path, trust_remote_code)
        name = Path(path).name if Path(path).is_dir() else Path(path).parent.name
        for label, texts in text_sets.items():
            if not texts:
                continue
            rows.append({"tokenizer": name, "path": str(path), "vocab_size": tok.get_vocab_size(with_added_tokens=True),
                         "set": label, **measure(tok, texts)})
    return rows


def default_text_sets(max_docs: int = 2000) -> dict[str, list[str]]:
    """Held-out documents of each embedded corpus language (never used to train moai's tokenizers)."""
    from moai_llm import corpora

    sets = {}
    for lang in corpora.languages():
        texts = []
        for text in corpora.iter_texts(lang, split="heldout"):
            texts.append(text)
            if len(texts) >= max_docs:
                break
        sets[lang] = texts
    return sets
