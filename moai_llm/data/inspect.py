"""What is in a prepared dataset: counts, sources and shares, packing, length histogram, rows.

`summary(dir)` reads the manifest (instant whatever the size); `decoded_rows(dir, n)` decodes
the first n rows into segments (document, loss-carrying or not, padding) so that a person can
see exactly which text the model learns from.

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tok = train_tokenizer(["hello world", "the quick brown fox"] * 20, d / "tok", vocab_size=300)
    >>> import json
    >>> from moai_llm.data.prepare import prepare_dataset
    >>> rows = [{"text": t} for t in ["hello world", "the quick brown fox"] * 10]
    >>> _ = (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> _ = prepare_dataset([str(d / "corpus.jsonl")], tok, 64, d / "prepared")
    >>> info = summary(d / "prepared")
    >>> info["num_documents"], 0 < info["packing_efficiency"] <= 1
    (20, True)
    >>> print("\\n".join(histogram_lines(info["doc_length_histogram"])))  # doctest: +ELLIPSIS
          1-...
    >>> decoded_rows(d / "prepared", 1)[0][0]  # doctest: +ELLIPSIS
    {'doc': 0, 'loss': True, 'text': '...<|endoftext|>'}

(In an SFT dataset a row starts {"doc": 0, "loss": False, "text": "<|im_start|>user\\n..."}.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from moai_llm.data.store import load_prepared, read_manifest
from moai_llm.errors import MoaiInputError


def summary(folder: str | os.PathLike) -> dict[str, Any]:
    """Rows, tokens, documents, sources with token shares, packing figures and the histogram."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise MoaiInputError(f"{folder}: not a prepared dataset (no complete manifest.json)",
                             hint="run `moai data prepare ... --output-dir` first")
    keys = ("seq_len", "mode", "packing", "num_rows", "num_tokens", "num_documents", "packing_efficiency",
            "docs_split", "tokens_cut", "tokens_dropped", "dropped_documents", "empty_documents", "skipped_rows",
            "tokenizer_dir", "tokenizer_hash", "created", "build_seconds", "doc_length_histogram")
    info = {k: manifest.get(k) for k in keys}
    info["path"] = str(Path(folder).resolve())
    info["sources"] = [{k: s.get(k) for k in ("spec", "weight", "documents", "tokens", "token_share")}
                       for s in manifest["sources"]]
    return info


def histogram_lines(histogram: dict[str, int], width: int = 40) -> list[str]:
    """A terminal bar chart of document lengths, one line per power-of-two bucket."""
    if not histogram:
        return []
    top = max(histogram.values())
    lines, low = [], 1
    for bound, count in sorted(((int(k), v) for k, v in histogram.items())):
        bar = "█" * max(1 if count else 0, round(width * count / top))
        lines.append(f"{low:>7}-{bound:<7} {bar:<{width}} {count:,}")
        low = bound + 1
    return lines


def decoded_rows(folder: str | os.PathLike, n: int, tokenizer_dir: str | None = None) -> list[list[dict[str, Any]]]:
    """The first `n` rows as segments {"doc", "loss", "text"} (doc -1 is the padding tail)."""
    from moai_llm.data.encoding import load_backend

    manifest = read_manifest(folder)
    if manifest is None:
        raise MoaiInputError(f"{folder}: not a prepared dataset (no complete manifest.json)")
    tok_dir = tokenizer_dir or manifest["tokenizer_dir"]
    if not Path(tok_dir, "tokenizer.json").is_file():
        raise MoaiInputError(f"{tok_dir}: the tokenizer this dataset was built with is gone", hint="pass --tokenizer DIR")
    backend = load_backend(tok_dir).backend_tokenizer
    ds = load_prepared(folder)
    rows = []
    for row in ds.select(range(min(n, len(ds)))):
        ids, labels, pos = (np.asarray(row[c]) for c in ("input_ids", "labels", "position_ids"))
        starts = np.flatnonzero(pos == 0).tolist() + [len(ids)]
        real = manifest["seq_len"] - _pad_tail(ids, pos, manifest.get("pad_token_id"))
        segments = []
        for doc, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            if a >= real:
                segments.append({"doc": -1, "loss": False, "text": f"<pad ×{len(ids) - a}>"})
                break
            loss = labels[a:b] != -100
            # Runs of equal loss flag inside the document, each decoded on its own.
            cuts = [a] + (np.flatnonzero(np.diff(loss)) + a + 1).tolist() + [b]
            for s, e in zip(cuts[:-1], cuts[1:], strict=True):
                text = backend.decode(ids[s:e].tolist(), skip_special_tokens=False)
                segments.append({"doc": doc, "loss": bool(labels[s] != -100), "text": text})
        rows.append(segments)
    return rows


def _pad_tail(ids: np.ndarray, pos: np.ndarray, pad_id: int | None) -> int:
    """Length of the padding tail: the last segment when it is all pad ids with no labels."""
    last = int(np.flatnonzero(pos == 0)[-1])
    if pad_id is not None and (ids[last:] == pad_id).all():
        return len(ids) - last
    return 0
