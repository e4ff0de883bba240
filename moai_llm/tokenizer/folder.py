"""Saving and loading tokenizer folders: the transformers layout, written atomically.

A folder holds tokenizer.json (the `tokenizers` pipeline), tokenizer_config.json (special
tokens, no BOS, `clean_up_tokenization_spaces: false`, the ChatML template inline for older
readers), special_tokens_map.json and chat_template.jinja (where transformers 5 looks first). It
is built in a temporary folder beside the target and renamed into place (moai_llm.atomic), so a
failure, a full disk included, never leaves half a folder behind.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moai_llm.atomic import building
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
    there only once the new one is complete. Returns the folder.

    The files are serialised first, so a disk without room for them is refused before anything
    is written (DiskFullError, exit 2), and a disk that fills meanwhile leaves nothing behind.
    """
    out = Path(output_dir)
    files = {
        "tokenizer.json": tok.to_str(),
        "tokenizer_config.json": _json(tokenizer_config(tok)),
        "special_tokens_map.json": _json({"additional_special_tokens": [IM_START, IM_END],
                                          "eos_token": ENDOFTEXT, "pad_token": PAD}),
        "chat_template.jinja": CHAT_TEMPLATE,
    }
    write_folder(out, files)
    return out


def write_folder(out: Path, files: dict[str, str]) -> None:
    """Write text files as the folder `out`, whole or not at all, after checking the disk."""
    from moai_llm.ownership import MARKER, claim, marker_text
    from moai_llm.resources import check_disk

    claim(out, "tokenizer")  # replaces only a tokenizer folder moai made, never a user's folder
    needed = sum(len(text.encode("utf-8")) for text in files.values())
    check_disk(out, needed, "the tokenizer")
    with building(out, needed) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / MARKER).write_text(marker_text("tokenizer", "moai tokenizer train", os.listdir(tmp)), encoding="utf-8")


# What a tokenizer folder may hold, copied into model folders (checkpoints, final_model/, adapters).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt",
                   "tokenizer.model")


def put_tokenizer(tokenizer: Any, target: str | os.PathLike) -> None:
    """Into the existing folder `target`: a tokenizer folder's files copied byte for byte (so
    data prepared with the original still matches its hash), or a tokenizer object saved."""
    import shutil

    if isinstance(tokenizer, (str, Path)):
        for name in TOKENIZER_FILES:
            src = Path(tokenizer) / name
            if src.is_file():
                shutil.copyfile(src, Path(target) / name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(target)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = False) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder (moai's or any transformers one) as a fast tokenizer.

    A folder's own Python code (an `auto_map` in tokenizer_config.json) runs only with
    `trust_remote_code=True`; otherwise the folder's tokenizer.json is used, or the folder is
    refused when it has none. A damaged file is named in a MoaiInputError (exit 2).

        >>> import tempfile, pathlib
        >>> from moai_llm.tokenizer import train_tokenizer
        >>> mine = train_tokenizer(["hello world"] * 20, pathlib.Path(tempfile.mkdtemp()) / "mine", vocab_size=300)
        >>> tok = load_tokenizer(mine)
        >>> tok.decode(tok("hello world")["input_ids"])
        'hello world'
    """
    from moai_llm.data.encoding import check_tokenizer_folder

    p = Path(path)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise MoaiInputError(f"{p}: not a tokenizer folder (no tokenizer.json)",
                             hint="train one with `moai tokenizer train`")
    check_tokenizer_folder(p, trust_remote_code)
    _check_json_files(p)
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        try:
            return AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
        except ValueError:
            if trust_remote_code or not (p / "tokenizer.json").is_file():
                raise
            # transformers refuses a class that only the folder's code defines; its tokenizer.json
            # loads without it (check_tokenizer_folder said the code is ignored).
            return PreTrainedTokenizerFast.from_pretrained(str(p), trust_remote_code=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        file = p / "tokenizer.json" if (p / "tokenizer.json").is_file() else p / "tokenizer_config.json"
        raise MoaiInputError(f"{file}: cannot be loaded as a tokenizer ({reason})",
                             hint="the folder is damaged or incomplete: copy or train the tokenizer again") from None


# JSON files transformers reads when it loads a tokenizer folder (config.json too: a model folder
# passed as --tokenizer); a damaged one is named itself, not blamed on tokenizer.json.
_JSON_READ = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def _check_json_files(folder: Path) -> None:
    from moai_llm.jsonfile import read_json_object

    for name in _JSON_READ:
        file = folder / name
        if not file.is_file():
            continue
        read_json_object(file, hint="the file is damaged; copy or save the folder again")
