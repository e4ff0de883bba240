"""Train a byte-level BPE (or Unigram) tokenizer with HuggingFace `tokenizers` from any text stream.

Why these choices:
- Byte-level: any string (emoji, control characters, unseen scripts) encodes without `<unk>`,
  and `decode(encode(text)) == text` (no normaliser, no prefix space, no space clean-up).
- BPE is trained on characters (the most frequent ones, up to 99.95% coverage, as
  SentencePiece does) and rewritten as an equivalent byte-level BPE (`bytelevel.py`): the
  compression of character-level BPE, with bytes as the fallback for rare characters.
- The pre-tokenizer splits like Llama-3 (letters with one leading non-letter, digits in groups
  of up to three, punctuation runs, whitespace runs), so tokens never cross words, and llama.cpp
  (`moai export`) reproduces it exactly.
- Special tokens come first (ids 0..3, `special.py`), then the 256 bytes, then merges.
- Texts stream in bounded batches: memory follows the number of distinct words, not input size.

Speed modes (`MODES`) trade compression for time by sampling the input; their measured cost
is in docs/tokenizer.md (`benchmarks/bench_tokenizer.py`).

    >>> from moai_llm.tokenizer import train_tokenizer, load_tokenizer
    >>> import tempfile, pathlib
    >>> path = train_tokenizer(["hello world"] * 100, pathlib.Path(tempfile.mkdtemp()) / "tok", vocab_size=300)
    >>> load_tokenizer(path).decode(load_tokenizer(path)("hello")["input_ids"])
    'hello'
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer.bytelevel import bytes_to_unicode, char_bpe_to_byte_level, to_byte_level
from moai_llm.tokenizer.folder import load_tokenizer, save_tokenizer
from moai_llm.tokenizer.special import SPECIAL_TOKENS
from moai_llm.tokenizer.text_streams import TextSource

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["MODES", "load_tokenizer", "new_tokenizer", "sampled", "train_tokenizer"]

# Llama-3's split pattern exactly as llama.cpp spells it for its `llama-bpe` pre-tokenizer
# (contractions spelled out: the same splits as `(?i:'s|...)`, ~1.5x faster in the regex engine).
# llama.cpp implements only a fixed set of patterns; among those it implements exactly, this one
# compresses ko/en/ja/zh best (benchmarks/bench_split_pattern.py, RESULTS.md), so a GGUF export
# tokenizes exactly as transformers does. `llama-bpe` also takes a word that is in the
# vocabulary whole, before any merge (IGNORE_MERGES), as Llama-3's tokenizer does.
SPLIT_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
IGNORE_MERGES = True
MIN_VOCAB = len(SPECIAL_TOKENS) + 256  # specials + every byte
# Texts reach the Rust trainer in batches (fewer Python→Rust crossings), bounded in count and
# size so memory stays flat whatever the input size.
BATCH_TEXTS, BATCH_CHARS = 1000, 4 << 20
COVERAGE = 0.9995  # share of characters (in the first PEEK_CHARS) the alphabet must cover
PEEK_CHARS = 2 << 20


@dataclass(frozen=True)
class Mode:
    """How a speed mode trains: `sample_bytes` = train on about this many bytes of the input
    (None: all of it), `min_frequency` = lower bound on how often a pair is seen to merge."""

    model: str  # "bpe" or "unigram"
    sample_bytes: int | None
    min_frequency: int
    summary: str


MODES: dict[str, Mode] = {
    "default": Mode("bpe", None, 2, "BPE on all of the input: best compression"),
    "fast": Mode("bpe", 20 << 20, 2, "BPE on a 20 MB sample of the input"),
    "turbo": Mode("bpe", 10 << 20, 2, "BPE on a 10 MB sample of the input"),
    "ultrafast": Mode("unigram", 2 << 20, 2, "Unigram on a 2 MB sample of the input"),
}
# When sampling, a source (file, dataset, language) smaller than this is kept whole, so a small
# language next to a big one keeps its share of the vocabulary.
KEEP_WHOLE_BYTES = 2 << 20


def _keep_rates(sizes: list[int | None], budget: int) -> list[float]:
    """Per-source probability of keeping a text so that about `budget` bytes are kept in all:
    the same rate everywhere, except that sources under KEEP_WHOLE_BYTES are kept whole."""
    total = sum(s for s in sizes if s)
    if not total or total <= budget:
        return [1.0] * len(sizes)
    rate = budget / total
    return [1.0 if not s else max(rate, min(1.0, KEEP_WHOLE_BYTES / s)) for s in sizes]


def _sampled(texts: Iterable[str] | list[TextSource], mode: Mode, total_bytes: int | None, seed: int
             ) -> Iterator[str]:
    """The texts a mode trains on. Sources (or a stream of known size) are sampled with a seeded
    Bernoulli draw per text, so the sample spreads over all of the input; a plain stream of
    unknown size gives its first `sample_bytes` bytes."""
    budget = mode.sample_bytes
    rng = random.Random(seed)
    if isinstance(texts, list) and texts and isinstance(texts[0], TextSource):
        rates = _keep_rates([s.size for s in texts], budget) if budget else [1.0] * len(texts)

        def opener(source: TextSource, rate: float) -> Callable[[], Iterator[str]]:
            return lambda: (t for t in source.open() if rate >= 1.0 or rng.random() < rate)

        yield from _round_robin([opener(s, r) for s, r in zip(texts, rates, strict=True)])
        return
    if budget is None:
        yield from texts
        return
    if total_bytes:
        rate = _keep_rates([total_bytes], budget)[0]
        yield from (t for t in texts if rate >= 1.0 or rng.random() < rate)
        return
    taken = 0
    for text in texts:
        yield text
        taken += len(text.encode("utf-8", "surrogatepass"))
        if taken >= budget:
            return


def _round_robin(openers: list[Callable[[], Iterator[str]]], window: int = 16) -> Iterator[str]:
    """Texts of several sources alternating (up to `window` open at once). BPE counts do not
    depend on order, but the alphabet is chosen from the first PEEK_CHARS characters, which must
    see every language of `--multilingual ko en ja zh`, not only the first one."""
    pending, active = deque(openers), deque()
    while pending or active:
        while pending and len(active) < window:
            active.append(iter(pending.popleft()()))
        it = active.popleft()
        for text in it:
            yield text
            active.append(it)
            break


def sampled(texts: Iterable[str] | list[TextSource], mode: str = "default", seed: int = 0) -> Iterator[str]:
    """The texts `mode` would train on (extension applies the speed modes' sampling this way)."""
    return _sampled(texts, MODES[mode], None, seed)


def _batched(texts: Iterable[str]) -> Iterator[list[str]]:
    """Non-empty texts in bounded batches."""
    batch: list[str] = []
    size = 0
    for text in texts:
        if not text:
            continue
        batch.append(text)
        size += len(text)
        if len(batch) >= BATCH_TEXTS or size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def new_tokenizer(model: object | None = None) -> Tokenizer:
    """A byte-level tokenizer with moai's pre-tokenizer and decoder around `model` (BPE default)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(model if model is not None else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _peek_alphabet(batches: Iterator[list[str]]) -> tuple[list[str], Iterator[list[str]]]:
    """Characters by frequency in the first PEEK_CHARS of the stream, cut at COVERAGE; and the
    stream again, unconsumed."""
    head: list[list[str]] = []
    counts: Counter[str] = Counter()
    size = 0
    for batch in batches:
        head.append(batch)
        for text in batch:
            counts.update(text)
            size += len(text)
        if size >= PEEK_CHARS:
            break
    total, covered, alphabet = sum(counts.values()), 0, []
    for ch, n in counts.most_common():
        if covered >= COVERAGE * total:
            break
        alphabet.append(ch)
        covered += n
    return alphabet, itertools.chain(head, batches)


def _train_bpe(batches: Iterator[list[str]], vocab_size: int, min_frequency: int, show_progress: bool) -> Tokenizer:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    alphabet, batches = _peek_alphabet(batches)
    # The rest of the input has a longer tail of characters than the first 2 MB: leave room.
    limit = len(alphabet) + len(alphabet) // 4
    chars = Tokenizer(models.BPE())
    chars.pre_tokenizer = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + limit, min_frequency=min_frequency, limit_alphabet=limit,
        show_progress=show_progress,
    )
    chars.train_from_iterator(batches, trainer=trainer)
    model = json.loads(chars.to_str())["model"]
    rank = {ch: i for i, ch in enumerate(alphabet)}
    trained_chars = sorted((t for t in model["vocab"] if len(t) == 1), key=lambda c: (rank.get(c, len(rank)), c))
    merges = [tuple(m) for m in model["merges"]]
    vocab, byte_merges = char_bpe_to_byte_level(trained_chars, merges, SPECIAL_TOKENS, vocab_size)
    tok = new_tokenizer(models.BPE(vocab=vocab, merges=byte_merges, ignore_merges=IGNORE_MERGES))
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok



def _train_unigram(batches: Iterator[list[str]], vocab_size: int, show_progress: bool) -> Tokenizer:
    """Unigram trained on characters (2-3x faster than on byte symbols, and no pieces that end
    inside a character), rewritten with byte-level pieces plus the 256 bytes at a score below
    every piece, so unseen characters still encode (as bytes) and decode exactly."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    # The Unigram trainer needs a vocabulary holding every character it sees; the sample of this
    # mode is small (about 2 MB), so it is held to count them. Extra pieces are cut below.
    sample = list(batches)
    alphabet: set[str] = set()
    for batch in sample:
        for text in batch:
            alphabet.update(text)
    chars = Tokenizer(models.Unigram())
    chars.pre_tokenizer = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False)
    # One EM sub-iteration and a faster shrink than the library's defaults: this is the speed mode.
    trainer = trainers.UnigramTrainer(vocab_size=max(vocab_size, len(alphabet) + 16), show_progress=show_progress,
                                      shrinking_factor=0.5, n_sub_iterations=1, max_piece_length=8)
    batches = iter(sample)
    chars.train_from_iterator(batches, trainer=trainer)
    pieces = sorted(json.loads(chars.to_str())["model"]["vocab"], key=lambda p: -p[1])
    byte_syms = list(bytes_to_unicode().values())
    floor = min((score for _, score in pieces), default=0.0) - 10.0
    entries = [(tok, 0.0) for tok in SPECIAL_TOKENS]
    seen = set(SPECIAL_TOKENS) | set(byte_syms)
    room = vocab_size - len(entries) - len(byte_syms)
    for piece, score in pieces:
        sym = to_byte_level(piece)
        if sym in seen or room <= 0:
            continue
        entries.append((sym, score))
        seen.add(sym)
        room -= 1
    entries.extend((sym, floor) for sym in byte_syms)
    tok = new_tokenizer(models.Unigram(entries, unk_id=None, byte_fallback=False))
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def train_tokenizer(
    texts: Iterable[str] | list[TextSource],
    output_dir: str | os.PathLike,
    vocab_size: int = 32000,
    min_frequency: int = 2,
    mode: str = "default",
    total_bytes: int | None = None,
    show_progress: bool = False,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `texts` and save it as a transformers tokenizer folder.

    `texts` is any iterable of strings, or a list of `TextSource` (sampling modes then sample
    each source and keep small ones whole). `total_bytes` (the size of a plain stream, when
    known) spreads sampling over all of it. Returns the folder. Raises MoaiInputError for an
    empty input or a bad size; nothing is written then.

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "corpus.txt").write_text("hello world\\nhello moai\\n" * 50, encoding="utf-8")
        >>> with open(d / "corpus.txt", encoding="utf-8") as f:
        ...     train_tokenizer(f, d / "mine", vocab_size=300, mode="turbo")  # doctest: +ELLIPSIS
        PosixPath('.../mine')
    """
    if mode not in MODES:
        raise MoaiInputError(f"unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}")
    if vocab_size < MIN_VOCAB:
        raise MoaiInputError(
            f"--vocab-size {vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{MIN_VOCAB} (4 special tokens + 256 bytes)"
        )
    check_min_frequency(min_frequency)
    spec = MODES[mode]
    check_vocab_memory(vocab_size, _input_bytes(texts, total_bytes, spec), spec.model)
    from moai_llm.atomic import remove_leftovers
    from moai_llm.locks import RunLock

    with RunLock(output_dir, command="moai tokenizer train"):
        remove_leftovers(output_dir)
        seen = {"texts": 0}

        def counted() -> Iterator[list[str]]:
            for batch in _batched(_sampled(texts, spec, total_bytes, seed)):
                seen["texts"] += len(batch)
                yield batch

        if spec.model == "bpe":
            tok = _train_bpe(counted(), vocab_size, max(min_frequency, spec.min_frequency), show_progress)
        else:
            tok = _train_unigram(counted(), vocab_size, show_progress)
        if seen["texts"] == 0:
            raise MoaiInputError("no text to train on: every input was empty", hint="check --input")
        return save_tokenizer(tok, output_dir)


def check_min_frequency(min_frequency: int) -> None:
    """--min-frequency counts how often a pair is seen: a negative count is a typo."""
    if min_frequency < 0:
        raise MoaiInputError(f"--min-frequency {min_frequency}: must be 0 or more",
                             hint="it is how often a pair must occur to be merged (default 2)")


# Token ids are stored as int32 in prepared datasets (and as u32 by `tokenizers`).
MAX_VOCAB = 2**31 - 1


def _input_bytes(texts, total_bytes: int | None, spec: Mode) -> int | None:
    """Bytes the trainer will read, when known: the sources' sizes or `total_bytes`, capped by
    the mode's sample."""
    size = total_bytes
    if isinstance(texts, list) and texts and isinstance(texts[0], TextSource):
        sizes = [s.size for s in texts]
        size = None if any(s is None for s in sizes) else sum(sizes)
    if spec.sample_bytes is not None:
        size = min(size, spec.sample_bytes) if size is not None else spec.sample_bytes
    return size


def check_vocab_memory(vocab_size: int, input_bytes: int | None, model: str = "bpe") -> None:
    """Refuse a --vocab-size whose trainer tables do not fit in the memory available (exit 2,
    with the prediction and the largest size that fits), before any text is read."""
    from moai_llm.resources import check_memory
    from moai_llm.tokenizer.trainer_memory import train_memory

    if vocab_size > MAX_VOCAB:
        raise MoaiInputError(f"--vocab-size {vocab_size}: token ids must fit in 31 bits (at most {MAX_VOCAB})",
                             hint="real vocabularies have 32k to 256k tokens")
    counted = "" if input_bytes else " (not counting the input, whose size is not known)"
    check_memory("--vocab-size", vocab_size, lambda v: train_memory(v, input_bytes, model), low=MIN_VOCAB,
                 step=64, what=f" for the trainer's vocabulary and word tables{counted}")
