"""How much memory training a tokenizer needs, predicted from --vocab-size and the input size.

The `tokenizers` trainers reserve their vocabulary tables up front, sized by the requested
vocabulary, not by what the input can fill (read in tokenizers' trainer sources and matched to
the sizes in their allocation failures, e.g. 70,866,960,400 bytes for --vocab-size 10^9, and to the
growth of the process's peak virtual memory, equal within 5% from 10^6 to 10^8 tokens):

- BPE: a hash map of token -> id (hashbrown: the next power of two above 8/7 of the capacity,
  32 bytes a bucket plus 1 control byte) and a vector of token strings (24 bytes each). moai
  asks for the vocabulary plus room for the alphabet (`ALPHABET_ROOM`).
- Unigram: two vectors of (piece, score) pairs, 32 bytes an entry each (its allocation failure
  for 10^9 is the first of them, 32,000,000,000 bytes).

The rest grows with the distinct words of the input, not with the vocabulary; measured on
Korean movie reviews (benchmarks/bench_memory_guard.py): about 62 MiB × (input MiB)^0.6 (the
Rust word and pair tables plus the batches in flight) up to 48 MiB. Beyond that it depends on
how many new words the text brings (repeating text adds none), which is not known before
reading it, so only the first 64 MiB are counted: the prediction is then what is needed at
least, and a refusal is certain. Text made only of distinct random words costs about 3x as
much; an input of unknown size (a hub stream) counts its sample when the mode samples, nothing
otherwise (the message says the input is not counted).

    >>> vocab_table_bytes(32000, "bpe") < 10 * 2**20
    True
    >>> human = __import__("moai_llm.resources", fromlist=["human_bytes"]).human_bytes
    >>> human(vocab_table_bytes(10**9, "bpe"))   # the map alone (66 GiB) made the trainer abort here
    '88.4 GiB'
"""

from __future__ import annotations

LIBRARIES = 40 << 20
ALPHABET_ROOM = 4096  # characters a BPE alphabet may add to --vocab-size (Korean ~2k, CJK more)
WORDS_MIB_AT_1MIB = 62.0
WORDS_EXPONENT = 0.6
WORDS_COUNTED_BYTES = 64 << 20


def _hashbrown_buckets(capacity: int) -> int:
    if capacity < 8:
        return 4 if capacity < 4 else 8
    return 1 << max(0, (capacity * 8 // 7 - 1).bit_length())


def vocab_table_bytes(vocab_size: int, model: str = "bpe") -> int:
    """Bytes the trainer reserves for a vocabulary of `vocab_size` (see the module docstring)."""
    if model == "unigram":
        return 64 * vocab_size
    capacity = vocab_size + ALPHABET_ROOM
    return 33 * _hashbrown_buckets(capacity) + 24 * capacity


def words_bytes(input_bytes: int | None) -> int:
    """Bytes of the word and pair tables for this much input, at least (natural text; the first
    64 MiB are counted; 0 when unknown)."""
    if not input_bytes:
        return 0
    counted = min(input_bytes, WORDS_COUNTED_BYTES)
    return int(WORDS_MIB_AT_1MIB * 2**20 * (counted / 2**20) ** WORDS_EXPONENT)


def train_memory(vocab_size: int, input_bytes: int | None, model: str = "bpe") -> int:
    """Predicted bytes a tokenizer training run adds: libraries, vocabulary tables, word tables."""
    return LIBRARIES + vocab_table_bytes(vocab_size, model) + words_bytes(input_bytes)
