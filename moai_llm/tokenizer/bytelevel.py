"""Byte-level symbols, and turning a character-level BPE into an equivalent byte-level one.

Why: BPE trained directly on bytes spends merges and vocabulary on fragments that cross
character boundaries (the last byte of one Hangul syllable + the next syllable), and covers rare
syllables only as loose bytes. Training on characters (the most frequent ones, like
SentencePiece's character coverage) and then rewriting the result in byte-level form gives the
character-level BPE's compression with byte-level's guarantee that any text encodes losslessly:

- every byte is a token (so unseen characters fall back to their UTF-8 bytes);
- for each alphabet character, merges that build it from its bytes come first
  (b1+b2, b1b2+b3 ...). They never fire across a character boundary, because a UTF-8 lead
  byte is never followed by another character's lead byte inside one character;
- then the character-level merges, in their trained order, rewritten in byte-level symbols.

Once every known character is assembled, the remaining merges act exactly as in the character
model, so encodings agree on text made of alphabet characters.

    >>> vocab, merges = char_bpe_to_byte_level(["a", "é"], [("a", "é")], specials=["<s>"], vocab_size=300)
    >>> merges[:2]
    [('Ã', '©'), ('a', 'Ã©')]
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def to_byte_level(text: str) -> str:
    """'é' → 'Ã©': the byte-level spelling of a string."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def from_byte_level(symbols: str) -> bytes:
    """'Ã©' → b'\\xc3\\xa9'. Raises KeyError for a string that is not byte-level."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in symbols)


def char_bpe_to_byte_level(
    alphabet: list[str], merges: list[tuple[str, str]], specials: list[str], vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Rewrite a character-level BPE (its alphabet, most frequent first, and its ordered merges)
    as a byte-level BPE with at most `vocab_size` tokens: specials, the 256 bytes, then merges.

    When building the whole alphabet takes at most half of the free vocabulary, every character is built
    first (as SentencePiece keeps its whole alphabet); otherwise (tiny vocabularies) a character
    is built just before the first merge that uses it, and leftover characters come last.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    table = bytes_to_unicode()
    for b in range(256):
        vocab[table[b]] = len(vocab)
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    built: set[str] = set()

    def add(left: str, right: str) -> bool:
        if (left, right) not in seen:
            new = left + right
            if new not in vocab:
                if len(vocab) >= vocab_size:
                    return False
                vocab[new] = len(vocab)
            seen.add((left, right))
            out.append((left, right))
        return True

    def build(text: str) -> bool:
        for ch in text:
            if ch in built:
                continue
            symbols = [table[b] for b in ch.encode("utf-8")]
            prefix = symbols[0]
            for sym in symbols[1:]:
                if not add(prefix, sym):
                    return False
                prefix += sym
            built.add(ch)
        return True

    prefixes = {ch.encode("utf-8")[:k] for ch in alphabet for k in range(2, len(ch.encode("utf-8")) + 1)}
    if len(prefixes) <= (vocab_size - len(vocab)) // 2 and not build("".join(alphabet)):
        return vocab, out
    for left, right in merges:
        if not (build(left + right) and add(to_byte_level(left), to_byte_level(right))):
            return vocab, out
    build("".join(alphabet))  # characters no merge used, while room is left
    return vocab, out
