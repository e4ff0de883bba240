"""Text the export tests train tokenizers on and compare tokenizations with: the embedded
ko/en/ja/zh corpora plus code, emoji, digit-heavy text, contractions and odd whitespace."""

from __future__ import annotations

from moai_llm import corpora

REPLY = "가"  # what the stopping_model fixture answers before <|im_end|>

EXTRA_TEXTS = [
    "def total(xs):\n    return sum(x * 2 for x in xs)  # 합계\n\nprint(total([1, 2, 3]))\n",
    "Emoji 😀🚀🌏✨ 👨‍👩‍👧 and flags 🇰🇷🇯🇵, café naïve über",
    "Order #12345 paid 1,234,567.89 KRW on 2026-12-06 at 09:30; call +82-10-1234-5678 (ref 007).",
    "I'm sure you'll see they've DON'T it's we'd",
    "  two  spaces\n\n\ttab\r\nwindows line\n   \n",
]


def training_texts() -> list[str]:
    return [t for lang in corpora.languages() for t in corpora.iter_texts(lang, "train")] + EXTRA_TEXTS * 20


def comparison_texts(per_language: int = 40) -> dict[str, list[str]]:
    """Held-out documents by language (never trained on), and the special kinds of text."""
    import itertools

    texts = {lang: list(itertools.islice(corpora.iter_texts(lang, "heldout"), per_language))
             for lang in corpora.languages()}
    texts["code"] = [EXTRA_TEXTS[0], "for (int i = 0; i < n; ++i) { a[i] += b[i] * 2; }\n"]
    texts["emoji"] = [EXTRA_TEXTS[1], "😀😀😀 ok 👍🏽 done 🎉"]
    texts["digits"] = [EXTRA_TEXTS[2], "3.14159265358979 2718281828 1e-9 0x1F 12 123 1234 12345 ₩1,000"]
    texts["other"] = [EXTRA_TEXTS[3], EXTRA_TEXTS[4], "<|im_start|>user\n안녕<|im_end|>",
                      "<think>\n생각 중\n</think>\n\n답: 42<|endoftext|>"]
    return texts
