"""Train a byte-level BPE (or Unigram) tokenizer with HuggingFace `tokenizers` from any text stream.

Why these choices:
- Byte-level: every string, emoji and control character included, encodes without `<unk>`,
  and `decode(encode(text)) == text` (no normaliser, no prefix space, no space clean-up).
- The pre-tokenizer splits like Llama-3 (letters with one leading non-letter, digits in groups
  of up to three, punctuation runs, whitespace runs), so tokens never cross words.
- Special tokens come first (ids 0..3, `special.py`), then the 256 byte symbols, then merges.
- Texts stream in batches: memory depends on the number of distinct words, not on input size.

Speed modes (`MODES`) trade compression for time by sampling the input (measured in
`benchmarks/bench_tokenizer.py`, table in docs/tokenizer.md).

    >>> from moai_llm.tokenizer import train_tokenizer, load_tokenizer
    >>> path = train_tokenizer(["hello world"] * 100, "/tmp/tok", vocab_size=300)
    >>> load_tokenizer(path).decode(load_tokenizer(path)("hello")["input_ids"])
    'hello'
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moai_llm.errors import MoaiInputError
from moai_llm.tokenizer.special import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    PAD,
    SPECIAL_TOKENS,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

# Llama-3's split pattern: contractions, letters with one leading non-letter (so " word" and
# "(word" are single pieces), up to three digits, punctuation runs, newlines, other spaces.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MIN_VOCAB = len(SPECIAL_TOKENS) + 256  # specials + every byte
BATCH = 1000  # texts per batch handed to the Rust trainer (fewer Python→Rust crossings)


@dataclass(frozen=True)
class Mode:
    """How a speed mode trains. `sample_bytes`: train on about this many bytes of the input
    (None = all of it); `min_frequency`: lower bound on the pair frequency for a merge."""

    model: str  # "bpe" or "unigram"
    sample_bytes: int | None
    min_frequency: int
    summary: str


MODES: dict[str, Mode] = {
    "default": Mode("bpe", None, 2, "BPE on all input: best compression"),
    "fast": Mode("bpe", 64 << 20, 2, "BPE on a 64 MB sample of the input"),
    "turbo": Mode("bpe", 16 << 20, 3, "BPE on a 16 MB sample, pairs seen 3+ times"),
    "ultrafast": Mode("unigram", 4 << 20, 2, "Unigram on a 4 MB sample"),
}


def _batched(texts: Iterable[str], mode: Mode, total_bytes: int | None, seed: int) -> Iterator[list[str]]:
    """Yield lists of non-empty texts, sampled to about `mode.sample_bytes` when the mode asks.

    With a known input size the sample is a seeded Bernoulli draw over the whole input (so it
    covers every file); without one, the first `sample_bytes` are used.
    """
    budget = mode.sample_bytes
    keep = 1.0
    if budget is not None and total_bytes:
        keep = min(1.0, budget / total_bytes)
    rng = random.Random(seed)
    taken = 0
    batch: list[str] = []
    for text in texts:
        if not text:
            continue
        if keep < 1.0 and rng.random() >= keep:
            continue
        batch.append(text)
        taken += len(text)  # characters: close enough to bytes for a budget
        if len(batch) >= BATCH:
            yield batch
            batch = []
        if budget is not None and taken >= budget:
            break
    if batch:
        yield batch


def new_tokenizer(model: str = "bpe") -> Tokenizer:
    """An untrained byte-level tokenizer with moai's pre-tokenizer and decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE() if model == "bpe" else models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_tokenizer(
    texts: Iterable[str],
    output_dir: str | os.PathLike,
    vocab_size: int = 32000,
    min_frequency: int = 2,
    mode: str = "default",
    total_bytes: int | None = None,
    show_progress: bool = False,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `texts` and save it as a transformers tokenizer folder.

    `total_bytes` (the input size, when known) lets sampling modes spread their sample over all
    of the input. Returns the folder. Raises MoaiInputError for an empty input or a bad size.

        >>> train_tokenizer(open("corpus.txt"), "tokenizers/mine", vocab_size=32000, mode="turbo")
    """
    from tokenizers import pre_tokenizers, trainers

    if mode not in MODES:
        raise MoaiInputError(f"unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}")
    if vocab_size < MIN_VOCAB:
        raise MoaiInputError(
            f"--vocab-size {vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{MIN_VOCAB} (4 special tokens + 256 bytes)"
        )
    spec = MODES[mode]
    min_frequency = max(min_frequency, spec.min_frequency if mode != "default" else 0)
    tok = new_tokenizer(spec.model)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if spec.model == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=alphabet, show_progress=show_progress,
        )
    else:
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet,
            show_progress=show_progress, max_piece_length=16, unk_token=None,
        )

    seen = {"texts": 0}

    def counted() -> Iterator[list[str]]:
        for batch in _batched(texts, spec, total_bytes, seed):
            seen["texts"] += len(batch)
            yield batch

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen["texts"] == 0:
        raise MoaiInputError("no text to train on: every input was empty", hint="check --input")
    return save_tokenizer(tok, output_dir)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of a `tokenizers.Tokenizer` with moai's special tokens and template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=ENDOFTEXT,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        extra_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tok: Tokenizer, output_dir: str | os.PathLike) -> Path:
    """Write the tokenizer folder atomically: built in a temp folder beside it, then renamed,
    so a failure never leaves a half-written folder (an existing one is replaced whole)."""
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        wrap(tok).save_pretrained(tmp)
        _portable_config(tmp)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _portable_config(folder: Path) -> None:
    """Make tokenizer_config.json readable by older transformers and other tools too: a
    standard tokenizer class and the chat template inline (transformers 5 also writes
    chat_template.jinja, which it prefers)."""
    import json

    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["bos_token"] = None
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def publish(tmp: Path, out: Path) -> None:
    """Move a finished folder `tmp` into place at `out`, replacing any previous folder whole."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder (moai's or any transformers one) as a fast tokenizer.

        >>> tok = load_tokenizer("tokenizers/mine")
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise MoaiInputError(f"{p}: not a tokenizer folder (no tokenizer.json)", hint="train one with `moai tokenizer train`")
    return AutoTokenizer.from_pretrained(str(p))
