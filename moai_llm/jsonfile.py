"""Reading a JSON file that must hold one object (config.json, tokenizer_config.json, ...):
a damaged, unreadable or non-object file is a one-line `MoaiInputError` naming it, never a
traceback.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = f.write_text('{"a": 1')
    >>> try:
    ...     read_json_object(f, "m/config.json")
    ... except MoaiInputError as e:
    ...     print(str(e).split(" (")[0])
    m/config.json: not valid JSON
"""

from __future__ import annotations

import json
import os
from typing import Any

from moai_llm.errors import MoaiInputError


def read_json_object(path: str | os.PathLike, name: str | None = None, hint: str | None = None) -> dict[str, Any]:
    """The object in `path`. `name`: how the message names the file (default: its path);
    `hint`: what to do about a damaged one."""
    name = name or str(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise MoaiInputError(f"{name}: cannot be read ({exc.strerror or exc})", hint=hint) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise MoaiInputError(f"{name}: not valid JSON ({str(exc)[:160]})", hint=hint) from None
    if not isinstance(data, dict):
        raise MoaiInputError(f"{name}: not a JSON object (found {type(data).__name__})", hint=hint)
    return data
