"""Extend a byte-level BPE tokenizer with domain vocabulary, keeping everything it had.

`moai tokenizer extend` continues BPE training from where the base tokenizer stopped:

1. the domain text is split by the base's own normaliser and pre-tokenizer and each distinct
   word is segmented by the base model (so learning starts from what the base produces);
2. BPE merges are learned on those segmentations, most frequent pair first, until the
   vocabulary reaches exactly `vocab_size` (or no pair is frequent enough: then it says so);
3. new tokens get ids after every existing id (special tokens included) and new merges rank
   after every existing merge, so each old token keeps its id and each old merge its rank, and
   text where no new merge fires encodes exactly as before.

New tokens are concatenations of existing byte-level tokens, never re-encoded strings, so
"double-encoded" junk (e.g. 'Ã«Ä¯' spelled out again as bytes) cannot appear. Any byte-level BPE
`tokenizer.json` works (GPT-2, Llama-3, Qwen, moai); others are refused with a reason.

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> base = train_tokenizer(["hello world, this is general text"] * 50, d / "base", vocab_size=300)
    >>> domain_texts = ["the bond yield rose while equity dividends fell"] * 50
    >>> report = extend_tokenizer(d / "base", domain_texts, d / "finance", vocab_size=310,
    ...                           heldout=["hello world"])
    >>> report["vocab_size"], report["heldout_unchanged"]
    (310, 1.0)
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from moai_llm.errors import MoaiInputError
from moai_llm.jsonfile import read_json_object
from moai_llm.progress import info

# Files of a tokenizer folder that stay valid after extension (vocab.json/merges.txt of a slow
# tokenizer would not, so they are left behind and transformers uses tokenizer.json).
KEEP_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")


def read_base(base: str | os.PathLike) -> tuple[Path, dict]:
    """(path of tokenizer.json, its parsed content) for a folder or a tokenizer.json file."""
    p = Path(base)
    if not p.exists():
        raise MoaiInputError(f"--base-tokenizer {base}: no such file or folder",
                             hint="give a tokenizer folder or a tokenizer.json file (a hub model: download "
                                  "it first, e.g. hf download Qwen/Qwen3-0.6B --local-dir qwen3-0.6b)")
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise MoaiInputError(f"--base-tokenizer {base}: no tokenizer.json there",
                             hint="give a tokenizer folder or a tokenizer.json file")
    spec = read_json_object(file, f"--base-tokenizer {file}")
    reason = not_byte_level_bpe(spec)
    if reason:
        raise MoaiInputError(f"--base-tokenizer {base}: not a byte-level BPE tokenizer ({reason})",
                             hint="extend works on byte-level BPE tokenizers (GPT-2, Llama-3, Qwen, moai)")
    return file, spec


def _has_type(node: object, name: str) -> bool:
    if isinstance(node, dict):
        return node.get("type") == name or any(_has_type(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_has_type(v, name) for v in node)
    return False


def not_byte_level_bpe(spec: dict) -> str | None:
    """Why a tokenizer.json is not a byte-level BPE, or None when it is one."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type') or 'unknown'}, not BPE"
    if model.get("byte_fallback"):
        return "it is a SentencePiece-style BPE with byte fallback"
    if not _has_type(spec.get("pre_tokenizer"), "ByteLevel"):
        return "its pre-tokenizer has no ByteLevel step"
    if not _has_type(spec.get("decoder"), "ByteLevel"):
        return "its decoder is not ByteLevel"
    return None


def learn_merges(words: Counter[tuple[str, ...]], known: set[str], new_tokens: int, min_frequency: int
                 ) -> tuple[list[tuple[str, str]], int]:
    """BPE on pre-segmented words: merges, most frequent pair first, until `new_tokens` strings
    not in `known` were created or no pair occurs `min_frequency` times. Returns (merges, created)."""
    seqs = [list(w) for w in words]
    freq = list(words.values())
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in pairwise(seq):
            pairs[pair] += freq[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    created = 0
    while heap and created < new_tokens:
        neg, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -neg:  # stale entry: the count changed since it was pushed
            if pairs.get(pair, 0) > 0:
                heapq.heappush(heap, (-pairs[pair], pair))
            continue
        if -neg < min_frequency:
            break
        merged = pair[0] + pair[1]
        merges.append(pair)
        if merged not in known:
            known.add(merged)
            created += 1
        changed: set[tuple[str, str]] = set()
        for i in where.pop(pair, ()):
            seq, n = seqs[i], freq[i]
            for p in pairwise(seq):
                pairs[p] -= n
                changed.add(p)
            out, j = [], 0
            while j < len(seq):
                if j + 1 < len(seq) and seq[j] == pair[0] and seq[j + 1] == pair[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
            for p in pairwise(out):
                pairs[p] += n
                where[p].add(i)
                changed.add(p)
        pairs.pop(pair, None)
        for p in changed:
            if pairs.get(p, 0) > 0:
                heapq.heappush(heap, (-pairs[p], p))
    return merges, created


def _chars_per_token(tok, texts: list[str]) -> float:
    tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return sum(map(len, texts)) / max(tokens, 1)


def check_output(base: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Refuse an output folder that is the base tokenizer's folder, inside it, or around it (or
    around a base given as a tokenizer.json file): the output replaces its folder whole, so the
    base would be lost."""
    protected, out = Path(base).expanduser().resolve(), Path(output_dir).expanduser().resolve()
    if out == protected or (protected.is_dir() and protected in out.parents):
        raise MoaiInputError(f"--output-dir {output_dir}: is the base tokenizer's folder {protected} or inside it; "
                             "the base would be overwritten", hint="write the extended tokenizer to a new folder")
    if out in protected.parents:
        raise MoaiInputError(f"--output-dir {output_dir}: holds the base tokenizer {protected}; replacing it "
                             "would delete the base", hint="write the extended tokenizer to a new folder")


def extend_tokenizer(
    base: str | os.PathLike,
    texts: Iterable[str],
    output_dir: str | os.PathLike,
    vocab_size: int,
    min_frequency: int = 2,
    heldout: Iterable[str] | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Extend the byte-level BPE at `base` (folder or tokenizer.json) with merges learned on
    `texts` up to `vocab_size` tokens; write a tokenizer folder at `output_dir`; return a report
    (sizes, whether the size was reached and why not, the share of `heldout` lines whose
    tokenization is unchanged, and the compression gained on held-out domain text).

    Only tokenizer.json is read; Python code a base folder names (auto_map) is never run. The
    new folder drops that auto_map, unless `trust_remote_code`: then the code is copied along."""
    from moai_llm.atomic import remove_leftovers
    from moai_llm.locks import RunLock
    from moai_llm.tokenizer.train import check_min_frequency

    check_min_frequency(min_frequency)
    file, spec = read_base(base)
    check_output(base, output_dir)
    with RunLock(output_dir, command="moai tokenizer extend"):
        remove_leftovers(output_dir)
        return _extend(base, file, spec, texts, output_dir, vocab_size, min_frequency, heldout, trust_remote_code)


def _extend(base, file: Path, spec: dict, texts, output_dir, vocab_size: int, min_frequency: int, heldout,
            trust_remote_code: bool) -> dict:
    from tokenizers import Tokenizer

    base_tok = Tokenizer.from_str(json.dumps(spec))
    base_size = base_tok.get_vocab_size(with_added_tokens=True)
    if vocab_size <= base_size:
        raise MoaiInputError(f"--vocab-size {vocab_size} is not larger than the base tokenizer's {base_size} tokens",
                             hint=f"give a size above {base_size}")
    words, domain_heldout, first = _domain_words(base_tok, texts)
    segmented: Counter[tuple[str, ...]] = Counter()
    for word, count in words.items():
        segmented[tuple(t.value for t in base_tok.model.tokenize(word))] += count
    known = set(base_tok.get_vocab(with_added_tokens=True))
    merges, _ = learn_merges(segmented, known, vocab_size - base_size, min_frequency)
    new_tokens = _append_merges(spec, merges)
    new_tok = Tokenizer.from_str(json.dumps(spec))
    final_size = new_tok.get_vocab_size(with_added_tokens=True)

    report = {
        "base": str(base), "output_dir": str(output_dir), "base_vocab_size": base_size,
        "vocab_size": final_size, "requested_vocab_size": vocab_size, "new_tokens": len(new_tokens),
        "new_merges": len(merges), "reached": final_size == vocab_size, "reason": None,
        "sample_new_tokens": [new_tok.decode([new_tok.token_to_id(t)]) for t in new_tokens[:20]],
    }
    if final_size < vocab_size:
        report["reason"] = (f"only {len(new_tokens)} new tokens occur at least {min_frequency} times in the "
                            f"domain text; give more domain text or lower --min-frequency")
    measure = domain_heldout or first
    report["domain_measured_on"] = "held-out domain texts" if domain_heldout else "the domain texts learned from"
    report["domain_chars_per_token_base"] = _chars_per_token(base_tok, measure)
    report["domain_chars_per_token"] = _chars_per_token(new_tok, measure)
    report["domain_compression_gain"] = report["domain_chars_per_token"] / report["domain_chars_per_token_base"] - 1
    lines = [ln for text in (heldout or []) for ln in text.splitlines() if ln.strip()][:20000]
    if lines:
        old = base_tok.encode_batch(lines, add_special_tokens=False)
        new = new_tok.encode_batch(lines, add_special_tokens=False)
        report["heldout_lines"] = len(lines)
        report["heldout_unchanged"] = sum(a.ids == b.ids for a, b in zip(old, new, strict=True)) / len(lines)
    _write_extended(spec, file, Path(output_dir), trust_remote_code)
    info(f"extended {base_size} → {final_size} tokens ({len(merges)} new merges) in {output_dir}")
    return report


def _domain_words(base_tok, texts) -> tuple[Counter[str], list[str], list[str]]:
    """Pre-tokenized word counts of the domain text, every 10th text held out to measure the gain
    on unseen domain text (and the first 100 learned ones, for inputs of fewer than 10 texts)."""
    words: Counter[str] = Counter()
    domain_heldout: list[str] = []
    first: list[str] = []
    n_texts = 0
    for text in texts:
        if not text:
            continue
        n_texts += 1
        if n_texts % 10 == 0 and len(domain_heldout) < 5000:
            domain_heldout.append(text)
            continue
        if len(first) < 100:
            first.append(text)
        norm = base_tok.normalizer.normalize_str(text) if base_tok.normalizer else text
        words.update(piece for piece, _ in base_tok.pre_tokenizer.pre_tokenize_str(norm))
    if n_texts == 0 or not words:
        raise MoaiInputError("no domain text: every input was empty", hint="check --input / --dataset")
    return words, domain_heldout, first


def _append_merges(spec: dict, merges: list[tuple[str, str]]) -> list[str]:
    """Append `merges` and their tokens to the tokenizer.json `spec` in place, keeping every id
    and merge rank of the base; returns the new tokens in id order."""
    model = spec["model"]
    # `tokenizers` numbers added tokens that are missing from the model vocabulary after the
    # model's size when it loads a file, so growing the model would renumber them (Llama-3 keeps
    # its specials outside the model vocabulary). Pinning them in the vocabulary keeps their ids.
    for added in spec.get("added_tokens") or []:
        model["vocab"].setdefault(added["content"], added["id"])
    next_id = max(model["vocab"].values()) + 1
    new_tokens = []
    for left, right in merges:
        merged = left + right
        if merged not in model["vocab"]:
            model["vocab"][merged] = next_id
            new_tokens.append(merged)
            next_id += 1
    as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
    model["merges"].extend(f"{a} {b}" if as_strings else [a, b] for a, b in merges)
    return new_tokens


def _write_extended(spec: dict, file: Path, out: Path, trust_remote_code: bool) -> None:
    """The extended tokenizer folder, written whole (the base's other files copied along)."""
    from moai_llm.atomic import building
    from moai_llm.ownership import MARKER, claim, marker_text
    from moai_llm.resources import check_disk

    claim(out, "tokenizer")  # replaces only a tokenizer folder moai made, never a user's folder
    text = json.dumps(spec, ensure_ascii=False)
    needed = len(text.encode("utf-8")) + sum((file.parent / n).stat().st_size for n in KEEP_FILES
                                             if (file.parent / n).is_file())
    check_disk(out, needed, "the extended tokenizer")
    with building(out, needed) as tmp:
        (tmp / "tokenizer.json").write_text(text, encoding="utf-8")
        kept = [name for name in KEEP_FILES if (file.parent / name).is_file() and file.name == "tokenizer.json"]
        for name in kept:
            shutil.copyfile(file.parent / name, tmp / name)  # contents only: modes follow the umask
        if "tokenizer_config.json" not in kept:
            _write_plain_config(tmp)
            # save_pretrained rewrote tokenizer.json in its own layout: put the extended file back
            (tmp / "tokenizer.json").write_text(text, encoding="utf-8")
        _carry_code(file.parent, tmp, trust_remote_code)
        (tmp / MARKER).write_text(marker_text("tokenizer", "moai tokenizer extend", os.listdir(tmp)), encoding="utf-8")


def _carry_code(base_dir: Path, tmp: Path, trust_remote_code: bool) -> None:
    """A base whose config names Python code (auto_map): copy the code when trusted, else drop
    the auto_map from the new config so that nothing in it asks to run code."""
    config_path = tmp / "tokenizer_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not config.get("auto_map"):
        return
    if trust_remote_code:
        for code in base_dir.glob("*.py"):
            shutil.copyfile(code, tmp / code.name)
        return
    from moai_llm.data.encoding import remote_code

    code = remote_code(config) or ""
    info(f"{base_dir}: the base names Python code ({code}); it was not run, and the extended "
         "tokenizer's config leaves it out (--trust-remote-code copies it along)")
    del config["auto_map"]
    if config.get("tokenizer_class") and config["tokenizer_class"] in code:  # a class only that code defines
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_plain_config(folder: Path) -> None:
    """A tokenizer_config.json for a bare tokenizer.json, so AutoTokenizer loads the folder."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), clean_up_tokenization_spaces=False)
    fast.save_pretrained(folder)
