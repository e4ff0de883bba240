"""Where an export goes, and when moai may replace what is already there.

An export is one GGUF file (`--format gguf`, `--adapter-only`) or one folder holding a GGUF and
a Modelfile (`--format ollama`). Both are written under a temporary name beside the target and
renamed into place once whole, so a kill or a full disk leaves the target as it was (and a
temporary `.NAME.tmp-*` that the next export removes). An existing target is replaced only when
it is moai's own export: a GGUF whose header carries moai's `moai.export` key, or a folder
whose ownership marker says `export` (moai_llm.ownership). Anything else is refused (exit 2).

    >>> default_output("outputs/sft", "gguf", "q8_0", False)
    PosixPath('sft-q8_0.gguf')
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from moai_llm.errors import MoaiInputError

MOAI_KEY = "moai.export"


def default_output(model: str | os.PathLike, fmt: str, quant: str, adapter_only: bool) -> Path:
    """`<name>-<quant>.gguf`, `<name>-lora-<quant>.gguf` or `<name>-ollama/` in the current folder,
    where name is MODEL's last path part (the run or model folder)."""
    name = Path(str(model).rstrip("/")).name or "model"
    if fmt == "ollama":
        return Path(f"{name}-ollama")
    return Path(f"{name}-lora-{quant}.gguf" if adapter_only else f"{name}-{quant}.gguf")


def is_moai_gguf(path: Path) -> bool:
    """True for a GGUF file that moai export wrote (its header has the `moai.export` key)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return False
        import gguf

        return MOAI_KEY in gguf.GGUFReader(str(path)).fields
    except (OSError, ValueError, IndexError, KeyError):
        return False


def check_output(out: Path, fmt: str, model: str | os.PathLike) -> None:
    """Refuse `out` unless it is absent or moai's own export of this kind (nothing is written).
    An Ollama folder goes through `ownership.claim` (its marker says moai made it; never `/`,
    home, the current folder, or a folder holding or inside the model)."""
    if fmt == "ollama":
        from moai_llm.ownership import claim

        claim(out, "export", flag="--output", inputs=[model])
        return
    if not out.exists() and not out.is_symlink():
        if not out.parent.exists():
            raise MoaiInputError(f"--output {out}: its folder {out.parent} does not exist", hint="create it first")
        return
    if out.is_dir() or not is_moai_gguf(out):
        raise MoaiInputError(f"--output {out}: exists and is not a GGUF moai exported (moai replaces only its own)",
                             hint="name a new file (or move that one aside yourself)")


def temp_beside(out: Path) -> Path:
    """A temporary name next to `out`, in the form `remove_leftovers` cleans up."""
    return out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"


def publish_file(tmp: Path, out: Path) -> Path:
    """Rename the finished `tmp` over `out` (one step: readers see the old file or the new)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, out)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
