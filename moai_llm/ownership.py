"""Which folders moai may replace: its own outputs, proven by a marker it writes in each.

Every output folder moai creates (a prepared dataset, a tokenizer, a run folder, final_model/,
a checkpoint, a quickstart folder) holds `.moai-output.json`: the kind of output, the command
that made it and moai's version. Before anything replaces or writes into an existing folder,
`claim(folder, kind)` checks it:

- absent or empty: fine (it becomes moai's);
- moai's own output of the same `kind`: fine (the caller may replace it; `--force` never widens
  this);
- anything else (a user's folder, another kind of moai output, a folder with files moai did not
  make): refused with exit 2 naming it, before anything is written.

`/`, the home folder, the current folder and any folder that holds (or lies inside) an input of
the same command are refused whatever they hold: replacing them would delete the inputs, and
an output inside an input folder would be read back as input by the next run.

Folders written by moai versions that had no marker are recognised only by their exact
contents: a prepared dataset whose manifest.json is moai's and which holds nothing but moai's
files; a tokenizer folder holding only tokenizer files; a run folder whose run.yaml is moai's
and which holds only what a run writes. One extra file of the user's and it is not recognised.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> claim(d / "tok", "tokenizer")           # absent: fine
    >>> _ = write_marker(d / "tok", "tokenizer", "moai tokenizer train")
    >>> kind_of(d / "tok")
    'tokenizer'
    >>> (d / "app").mkdir(); _ = (d / "app" / "main.js").write_text("x")
    >>> claim(d / "app", "dataset")
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: --output-dir .../app: exists and is not a prepared dataset (it holds main.js); ...
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

MARKER = ".moai-output.json"
KINDS = ("dataset", "tokenizer", "run", "model", "checkpoint", "quickstart", "export")
DESCRIPTION = {"dataset": "prepared dataset", "tokenizer": "tokenizer folder", "run": "run folder",
               "model": "model folder", "checkpoint": "checkpoint", "quickstart": "quickstart folder",
               "export": "export folder"}

# What moai versions without a marker wrote, per kind (names; "*" patterns by prefix/suffix).
TOKENIZER_NAMES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "moai_tokenizer.json"}
MANIFEST = "manifest.json"  # a prepared dataset's (moai_llm.data.store reads this name from here)
RUN_NAMES = {"run.yaml", "metrics.jsonl", "checkpoints", "final_model", "final_adapter", "tb",
             "loss.png", "data", "eval", "eval_results.json", "stages"}
QUICKSTART_NAMES = {"tokenizer", "corpus.jsonl", "finance_qa.jsonl", "eval_files", "pretrain", "sft",
                    "eval"}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("moai")
    except Exception:  # not installed as a distribution (a source checkout on sys.path)
        return "unknown"


def marker_text(kind: str, command: str | None = None, files: Iterable[str] | None = None) -> str:
    """The marker's content (JSON: kind, command, moai version, when; `files`: the names moai
    wrote, for outputs replaced whole, so a file added later by hand is seen as the user's)."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    found = {"kind": kind, "command": command or "moai", "moai_version": _version(),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if files is not None:
        found["files"] = sorted(n for n in files if n != MARKER)
    return json.dumps(found) + "\n"


def write_marker(folder: str | os.PathLike, kind: str, command: str | None = None,
                 record_files: bool = False) -> Path:
    """Mark `folder` (created when missing) as moai's output of `kind`, with the names it holds
    now when `record_files`. Returns the marker."""
    from moai_llm.atomic import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = os.listdir(folder) if record_files else None
    return write_text_atomic(folder / MARKER, marker_text(kind, command, files))


def add_made(folder: str | os.PathLike, name: str) -> None:
    """Record in `folder`'s marker that moai made `name` in it later (a prepared dataset's
    reference/ log-probs), so replacing the folder knows it is moai's; nothing without a list."""
    from moai_llm.atomic import write_text_atomic

    marker = read_marker(folder)
    if marker is None or not isinstance(marker.get("files"), list) or name in marker["files"]:
        return
    marker["files"] = sorted([*marker["files"], name])
    write_text_atomic(Path(folder) / MARKER, json.dumps(marker) + "\n")


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of `folder`, or None (none, unreadable, or not moai's)."""
    try:
        found = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("kind") in KINDS else None


def _names(folder: Path) -> set[str]:
    # moai's own hidden files (the marker, leftovers of killed writes) say nothing about the owner
    return {n for n in os.listdir(folder) if not n.startswith(".")}


def _legacy_dataset(folder: Path, names: set[str]) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not {"tokenizer_hash", "seq_len", "shards"} <= set(manifest):
        return False
    shards = manifest.get("shards")
    listed = {s.get("file") if isinstance(s, dict) else s for s in shards} if isinstance(shards, list) else set()
    return names <= {MANIFEST} | {n for n in listed if isinstance(n, str)}


def _legacy_run(folder: Path, names: set[str]) -> bool:
    if "run.yaml" not in names or not names <= RUN_NAMES:
        return False
    try:
        with open(folder / "run.yaml", encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("moai_run:")  # the run record's first key (training/record.py)


def _legacy_kind(folder: Path) -> str | None:
    names = _names(folder)
    if not names:
        return None
    if "manifest.json" in names and _legacy_dataset(folder, names):
        return "dataset"
    if "tokenizer.json" in names and names <= TOKENIZER_NAMES:
        return "tokenizer"
    if _legacy_run(folder, names):
        return "run"
    if names <= QUICKSTART_NAMES and kind_of(folder / "tokenizer") == "tokenizer":
        return "quickstart"
    return None


def kind_of(folder: str | os.PathLike) -> str | None:
    """What moai output `folder` is ("dataset", "run", ...), or None when it is not moai's."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marker = read_marker(folder)
    if marker is not None:
        return marker["kind"]
    try:
        return _legacy_kind(folder)
    except OSError:
        return None


def foreign_names(folder: str | os.PathLike, kind: str) -> list[str]:
    """Names in moai's output `folder` of `kind` that moai did not put there (a user's notes in a
    prepared dataset): replacing the folder whole would delete them."""
    folder = Path(folder)
    names = _names(folder)
    marker = read_marker(folder) or {}
    if isinstance(marker.get("files"), list):
        return sorted(names - set(marker["files"]))
    known = {"tokenizer": TOKENIZER_NAMES, "run": RUN_NAMES, "quickstart": QUICKSTART_NAMES}.get(kind)
    if kind == "dataset" and not marker:
        return [] if _legacy_dataset(folder, names) else sorted(names - {"manifest.json"})
    return sorted(names - known) if known is not None else []


def is_empty(folder: str | os.PathLike) -> bool:
    """True for an empty folder (hidden files included) or none at all."""
    folder = Path(folder)
    return not folder.is_dir() or not any(folder.iterdir())


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_unsafe(out: str | os.PathLike, flag: str = "--output-dir",
                  inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse `/`, the home folder, the current folder, and a folder that holds or lies inside
    one of `inputs` (files or folders this command reads). Returns `out` resolved."""
    real = Path(out).expanduser().resolve()
    special = {Path.cwd().resolve(): "the current folder", Path.home().resolve(): "your home folder",
               Path("/"): "the root folder"}  # the later name wins where two are one folder
    if real in special:
        raise MoaiInputError(f"{flag} {out}: is {special[real]}; moai writes its output into a folder "
                             "of its own", hint=f"name a new folder, e.g. {flag} ./moai-output")
    for given in inputs:
        if not given or "://" in str(given):
            continue
        source = Path(given).expanduser()
        if not source.exists():
            continue
        source = source.resolve()
        if _inside(source, real):
            raise MoaiInputError(f"{flag} {out}: holds the input {given}; replacing it would delete "
                                 "the input", hint="write the output to a folder of its own")
        if source.is_dir() and _inside(real, source):
            raise MoaiInputError(f"{flag} {out}: is inside the input folder {given}; the next run "
                                 "would read it back as input", hint="write the output outside it")
    return real


def claim(out: str | os.PathLike, kind: str, flag: str = "--output-dir",
          inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse `out` unless it is absent, empty, or moai's own output of `kind` (see the module
    docstring); also `refuse_unsafe`. Nothing is written."""
    refuse_unsafe(out, flag, inputs)
    path = Path(out).expanduser()
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise MoaiInputError(f"{flag} {out}: exists and is not a {DESCRIPTION[kind]} (it is a file)",
                             hint="name a new folder (moai does not replace files it did not make)")
    if is_empty(path):
        return
    found = kind_of(path)
    extra = foreign_names(path, kind) if found == kind and kind in ("dataset", "tokenizer", "export") else []
    if extra:
        more = ", ..." if len(extra) > 3 else ""
        raise MoaiInputError(f"{flag} {out}: moai's {DESCRIPTION[kind]} also holds files moai did not make "
                             f"({', '.join(extra[:3])}{more}); replacing it would delete them",
                             hint="move those files out of it, or name a new folder")
    if found == kind:
        return
    raise MoaiInputError(f"{flag} {out}: exists and is not a {DESCRIPTION[kind]} ({_what(path, found)}); "
                         "moai replaces only its own", hint="name a new folder (or move that one aside yourself)")


def _what(path: Path, found: str | None) -> str:
    if found is not None:
        return f"it is moai's {DESCRIPTION[found]}"
    shown = sorted(_names(path) or os.listdir(path))
    more = ", ..." if len(shown) > 3 else ""
    return f"it holds {', '.join(shown[:3])}{more}"


def plain_name(value: str, flag: str) -> str:
    """`value` when it is a plain folder name (no `/`, `\\`, `..`, not absolute); else exit 2:
    a flag meant as a name must not place output elsewhere (`--model-prefix ../../x`)."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value or value.startswith("~"):
        raise MoaiInputError(f"{flag} {value!r}: must be a folder name, not a path",
                             hint=f"give a plain name such as {flag} my-tokenizer; the folder goes inside --output-dir")
    return value

