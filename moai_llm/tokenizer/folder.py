"""Saving and loading tokenizer folders: the transformers layout, written atomically.

A folder holds tokenizer.json (the `tokenizers` pipeline), tokenizer_config.json (special
tokens, no BOS, `clean_up_tokenization_spaces: false`, the ChatML template inline for older
readers), special_tokens_map.json and chat_template.jinja (where transformers 5 looks first). It is built in a temporary folder
beside the target and renamed into place, so a failure never leaves half a folder behind.

    >>> import tempfile, pathlib
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.tokenizer.folder import load_tokenizer
    >>> mine = train_tokenizer(["hello world"] * 20, pathlib.Path(tempfile.mkdtemp()) / "mine", vocab_size=300)
    >>> tok = load_tokenizer(mine)
    >>> sorted(p.name for p in mine.iterdir())  # doctest: +ELLIPSIS
    [...'tokenizer.json', 'tokenizer_config.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from moai_llm.atomic import replace_dir
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


def tokenizer_config(tok: Tokenizer) -> dict:
    """tokenizer_config.json for a moai tokenizer, written by hand: importing transformers to
    write it costs seconds, which would be most of a `--turbo` run."""
    decoder = {}
    for name in SPECIAL_TOKENS:
        decoder[str(tok.token_to_id(name))] = {
            "content": name, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
    return {
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": ENDOFTEXT,
        "errors": "replace",
        "pad_token": PAD,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def save_tokenizer(tok: Tokenizer, output_dir: str | os.PathLike) -> Path:
    """Write `tok` as a transformers tokenizer folder at `output_dir`, replacing any folder
    there only once the new one is complete. Returns the folder."""
    out = Path(output_dir)
    with staging(out) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok))
        _write_json(tmp / "special_tokens_map.json", {
            "additional_special_tokens": [IM_START, IM_END], "eos_token": ENDOFTEXT, "pad_token": PAD,
        })
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class staging:
    """`with staging(out) as tmp:` write into `tmp`; on success `tmp` replaces `out` whole, on
    error `tmp` is deleted and `out` is untouched."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                publish(self.tmp, self.out)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def publish(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing a previous folder whole."""
    replace_dir(tmp, out)


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder (moai's or any transformers one) as a fast tokenizer.

        >>> import tempfile, pathlib
        >>> from moai_llm.tokenizer import train_tokenizer
        >>> mine = train_tokenizer(["hello world"] * 20, pathlib.Path(tempfile.mkdtemp()) / "mine", vocab_size=300)
        >>> tok = load_tokenizer(mine)
        >>> tok.decode(tok("hello world")["input_ids"])
        'hello world'
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise MoaiInputError(f"{p}: not a tokenizer folder (no tokenizer.json)",
                             hint="train one with `moai tokenizer train`")
    return AutoTokenizer.from_pretrained(str(p))
