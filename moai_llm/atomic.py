"""Output that is complete or absent: write beside the target, then rename into place.

Every file or folder moai produces (prepared datasets, tokenizers, checkpoints, final models,
run.yaml, manifests, saved chats) goes through these functions, so an interrupted run or bad
input never leaves a half-written result that looks finished.

- `write_text_atomic(path, text)`: one file, via a temporary file beside it.
- `building(out)`: `with building(out) as tmp:` fill the folder `tmp`; on success it replaces
  `out` whole, on error (a full disk included: `DiskFullError`) it is removed and `out` is
  untouched.
- `temp_dir_beside(out)` / `replace_dir(tmp, out)`: the two halves of `building`, for callers
  that publish later; `remove_leftovers(out)` deletes what a killed build left beside `out`
  (`.NAME.building-*`, `.NAME.old-*`, `.NAME.tmp-*`): call it while holding `out`'s lock.

Permissions follow the user's umask (0644 files and 0755 folders under umask 022), because
folders are made with `os.mkdir` and files with `open`: `tempfile.mkdtemp`/`mkstemp` would
make them 0700/0600, unreadable to the other users of a shared machine.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(d / "run.yaml", "seed: 0\\n").read_text()
    'seed: 0\\n'
    >>> with building(d / "tokenizer") as tmp:
    ...     _ = (tmp / "tokenizer.json").write_text("{}")
    >>> sorted(p.name for p in d.iterdir())
    ['run.yaml', 'tokenizer']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

LEFTOVER_TAGS = ("building", "old", "tmp")


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to a temporary file in the same folder, then rename it over `path`.

    A full disk raises DiskFullError (exit 2) and leaves the previous file as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _raise_if_disk_full(exc, path, len(text.encode(encoding, "replace")))
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write `records` as JSON lines (UTF-8, not escaped) with `write_text_atomic`."""
    import json

    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def temp_dir_beside(out: str | os.PathLike, tag: str = "building") -> Path:
    """A new empty folder `.NAME.TAG-xxxxxxxx` next to `out` (its parent is created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{tag}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # mode 0777 & ~umask, unlike tempfile.mkdtemp's 0700
    return tmp


def leftovers(out: str | os.PathLike) -> list[Path]:
    """What interrupted writes of `out` left beside it (temporary and set-aside copies)."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    return sorted(p for tag in LEFTOVER_TAGS for p in out.parent.glob(f".{out.name}.{tag}-*"))


def remove_leftovers(out: str | os.PathLike) -> int:
    """Delete `leftovers(out)`; returns how many there were. Only call this while holding `out`'s
    lock (moai_llm.locks.RunLock): a live build's temporary folder looks the same."""
    found = leftovers(out)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(found)


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


@contextlib.contextmanager
def building(out: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """`with building(out) as tmp:` write the folder's files into `tmp`; on success `tmp`
    replaces `out` whole; on any error `tmp` is deleted and `out` is untouched.

    A full disk becomes DiskFullError naming `needed` (the expected size in bytes, when the
    caller knows it) and the free space left once `tmp` is gone.
    """
    out = Path(out)
    tmp = temp_dir_beside(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException as exc:
        from moai_llm.resources import folder_bytes, is_disk_full

        written = folder_bytes(tmp) if is_disk_full(exc) else 0
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, out, needed, written)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def follow_umask(folder: str | os.PathLike) -> None:
    """Give the files of `folder` the mode a new file gets under the umask (0644 under 022):
    safetensors writes model.safetensors 0600 whatever the umask, unreadable to the other
    users of a shared machine."""
    mode = 0o666 & ~_umask()
    for child in Path(folder).iterdir():
        if child.is_file() and (child.stat().st_mode & 0o777) != mode:
            os.chmod(child, mode)


def _raise_if_disk_full(exc: BaseException, out: Path, needed: int | None, written: int | None = None) -> None:
    from moai_llm.resources import disk_full_error, is_disk_full

    if is_disk_full(exc):
        raise disk_full_error(out, needed, written) from exc
