"""Which llama.cpp pre-tokenizer reproduces a tokenizer's split pattern, if any.

llama.cpp does not run a tokenizer's own split regex: a GGUF names one of the pre-tokenizers
llama.cpp implements (`tokenizer.ggml.pre`) and llama.cpp splits text its own way for that
name. Tokenization is identical only when the tokenizer's pattern is exactly the one llama.cpp
implements under that name, and when BPE treats whole words the same way (`llama-bpe` takes a
word that is in the vocabulary whole before any merge: `ignore_merges`). So export reads the
pattern from tokenizer.json and looks it up here; a pattern llama.cpp does not implement is
refused with its text, or (asked for) measured: the share of held-out documents that the
closest llama.cpp pre-tokenizer splits differently.

    >>> from moai_llm.tokenizer.train import SPLIT_PATTERN
    >>> spec = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    ...     {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
    ...     {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    ...     "model": {"type": "BPE", "ignore_merges": True}}
    >>> recognise(spec).name
    'llama-bpe'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moai_llm.errors import MoaiInputError

# The contractions at the start of each pattern, in the spellings tokenizers use: the same splits.
_CONTRACTIONS = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
                 "'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])")
_C = "<contractions>"


@dataclass(frozen=True)
class PreTokenizer:
    """A llama.cpp pre-tokenizer: its `tokenizer.ggml.pre` name, the split pattern it implements
    (None: GPT-2's byte-level regex), and whether llama.cpp takes vocabulary words whole."""

    name: str
    pattern: str | None
    ignore_merges: bool
    label: str  # how users know it


KNOWN = (
    PreTokenizer("llama-bpe", _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+", True, "Llama-3's (moai's since 2026-12)"),
    PreTokenizer("qwen2", _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                 False, "Qwen2/Qwen3's"),
    PreTokenizer("qwen35", _C + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+", False, "Qwen3.5's"),
    PreTokenizer("gpt-2", None, False, "GPT-2's byte-level"),
)
# Patterns tokenizers in the wild use that no llama.cpp pre-tokenizer reproduces, by name.
NOT_IMPLEMENTED = {
    _C + r"|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "moai's before 2026-12 (Llama-3's with ' ?\\p{N}{1,3}')",
}
MISMATCH_FLAG = "--allow-tokenizer-mismatch"


def canonical(pattern: str) -> str:
    """`pattern` with its contractions in one spelling, so equal splits compare equal."""
    for spelling in _CONTRACTIONS:
        if pattern.startswith(spelling):
            return _C + pattern[len(spelling):]
    return pattern


def split_pattern(spec: dict) -> str | None:
    """The split regex of a tokenizer.json `spec`; None for GPT-2's built-in byte-level split.
    Raises MoaiInputError for a tokenizer that is not a byte-level BPE."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise MoaiInputError(f"the tokenizer is a {model.get('type') or 'unknown'} model; llama.cpp's GGUF "
                             "tokenizer for this architecture is byte-level BPE",
                             hint="train the tokenizer without --ultrafast (Unigram), or export the plain folder")
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    if any(s.get("add_prefix_space") for s in steps):  # llama.cpp's BPE never adds a leading space
        raise MoaiInputError("the tokenizer adds a space before the text (ByteLevel add_prefix_space), which "
                             "llama.cpp's byte-level BPE does not", hint="export the plain model folder instead")
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return None
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True) \
            and str(steps[0].get("behavior", "")).lower() == "isolated" and not steps[0].get("invert"):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if isinstance(regex, str):
            return regex
    raise MoaiInputError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not a byte-level "
                         "split that llama.cpp implements", hint="export the plain model folder instead")


def _steps(pre: dict | None) -> list[dict]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [s for p in pre.get("pretokenizers") or [] for s in _steps(p)]
    return [pre]


def recognise(spec: dict) -> PreTokenizer:
    """The llama.cpp pre-tokenizer that tokenizes as the tokenizer.json `spec` does, or
    MoaiInputError naming the pattern (exit 2)."""
    pattern = split_pattern(spec)
    ignore_merges = bool((spec.get("model") or {}).get("ignore_merges", False))
    key = canonical(pattern) if pattern is not None else None
    for pre in KNOWN:
        if pre.pattern == key and pre.ignore_merges == ignore_merges:
            return pre
    known = next((p for p in KNOWN if p.pattern == key), None)
    if known is not None:
        why = (f"its split pattern is {known.label} but its BPE {'ignores' if ignore_merges else 'applies'} merges for "
               f"words in the vocabulary, which llama.cpp's '{known.name}' does "
               f"{'not' if ignore_merges else 'too'}")
    else:
        name = NOT_IMPLEMENTED.get(key or "")
        why = f"llama.cpp implements no pre-tokenizer with its split pattern {pattern!r}" + (f" ({name})" if name else "")
    raise MoaiInputError(f"the tokenizer would tokenize differently in llama.cpp: {why}",
                         hint=f"retrain the tokenizer with this moai version, or pass {MISMATCH_FLAG} to export "
                              "anyway (it measures how much text tokenizes differently)")


def with_pre(spec: dict, pre: PreTokenizer) -> dict:
    """A copy of tokenizer.json `spec` that splits as llama.cpp's `pre` does: what llama.cpp
    will do with this vocabulary."""
    import copy

    out = copy.deepcopy(spec)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": pre.pattern is None}
    if pre.pattern is None:
        out["pre_tokenizer"] = byte_level
    else:
        regex = pre.pattern.replace(_C, _CONTRACTIONS[1])
        out["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            byte_level | {"use_regex": False}]}
    out["normalizer"] = None  # llama.cpp normalises nothing
    out["model"]["ignore_merges"] = pre.ignore_merges
    return out


def mismatch(spec: dict, documents: Iterable[str]) -> tuple[PreTokenizer, int, int]:
    """The llama.cpp pre-tokenizer closest to `spec` on `documents`: (it, documents tokenized
    differently, documents). Runs the tokenizer and its llama.cpp twin side by side."""
    import json

    from tokenizers import Tokenizer

    docs = [d for d in documents if d]
    own = Tokenizer.from_str(json.dumps(spec))
    want = own.encode_batch(docs, add_special_tokens=False)
    best: tuple[PreTokenizer, int, int] | None = None
    for pre in KNOWN:
        twin = Tokenizer.from_str(json.dumps(with_pre(spec, pre)))
        got = twin.encode_batch(docs, add_special_tokens=False)
        differ = sum(a.ids != b.ids for a, b in zip(want, got, strict=True))
        if best is None or differ < best[1]:
            best = (pre, differ, len(docs))
    assert best is not None
    return best


def heldout_documents(per_language: int = 200) -> list[str]:
    """Held-out documents of moai's embedded corpora (ko/en/ja/zh), `per_language` of each."""
    import itertools

    from moai_llm import corpora

    return [doc for lang in corpora.languages()
            for doc in itertools.islice(corpora.iter_texts(lang, "heldout"), per_language)]
