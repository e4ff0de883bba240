"""Tokenizers for moai: train (byte-level BPE / Unigram), extend with domain vocabulary, compare.

    >>> from moai_llm.tokenizer import train_tokenizer, load_tokenizer
"""

from moai_llm.tokenizer.train import load_tokenizer, train_tokenizer

__all__ = ["load_tokenizer", "train_tokenizer"]
