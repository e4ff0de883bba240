"""Output that is complete or absent: write beside the target, then rename into place.

Every file or folder moai produces (prepared datasets, tokenizers, checkpoints, final models,
run.yaml, manifests, saved chats) goes through these two functions, so an interrupted run or
bad input never leaves a half-written result that looks finished.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(d / "run.yaml", "seed: 0\\n").read_text()
    'seed: 0\\n'
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to a temporary file in the same folder, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished folder `tmp` to `out`, replacing any previous `out` whole.

    The previous folder is renamed aside first and deleted after the new one is in place, so
    at every moment `out` is either the old complete folder or the new complete one.
    """
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
