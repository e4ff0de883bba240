"""Whether a checkpoint can be resumed from, without loading it: `checkpoint_problem(path)`.

A checkpoint folder is published whole (checkpoint.py), but a disk can still damage it later
(a copy cut short, a file emptied, a hand edit). `--resume auto` asks `newest_sound` for the
newest checkpoint with no problem and says which newer ones it skipped and why, instead of
failing on the first damaged file halfway through loading. What is checked, cheaply:

- trainer_state.json is a JSON object whose "step" is an integer equal to the folder's N;
- config.json (a LoRA checkpoint's adapter_config.json) is a JSON object;
- each model*.safetensors (or the LoRA adapter's) has a readable header whose tensors end
  exactly where the file ends (a truncated file does not);
- optimizer.pt, scheduler.pt and rng-rank0.pt are complete torch archives (zip files whose
  directory, at their end, reads back: an empty or cut file does not). Nothing is unpickled.

    >>> import pathlib, tempfile
    >>> ckpt = pathlib.Path(tempfile.mkdtemp()) / "checkpoints" / "step-6"
    >>> ckpt.mkdir(parents=True)
    >>> _ = (ckpt / "trainer_state.json").write_text('{"step": "six"}')
    >>> checkpoint_problem(ckpt)
    'trainer_state.json: "step" is "six", not the integer 6'
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng-rank0.pt")


def _json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} cannot be read ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name} does not hold a JSON object"
    return data, None


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (None: its header and size agree)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is empty or cut short"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"{path.name} is cut short (its header says {length} bytes)"
            header = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name} cannot be read ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has no tensor table"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)]
    if not all(isinstance(e, int) for e in ends):
        return f"{path.name} has a damaged tensor table"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{path.name} is {size} bytes, its tensor table says {expected} (cut short or damaged)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return f"{path.name} is an empty archive"
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"{path.name} is cut short or damaged ({type(exc).__name__})"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint folder `path` (checkpoints/step-N) cannot be resumed from; None when
    every check in the module docstring passes."""
    path = Path(path)
    state, problem = _json_object(path / "trainer_state.json")
    if problem:
        return problem
    want = int(path.name[5:]) if path.name.startswith("step-") and path.name[5:].isdigit() else None
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or (want is not None and step != want):
        return f"trainer_state.json: \"step\" is {json.dumps(step)}, not the integer {want}"
    lora = (path / "adapter_model.safetensors").is_file()
    _, problem = _json_object(path / ("adapter_config.json" if lora else "config.json"))
    weights = sorted(path.glob("model*.safetensors")) or sorted(path.glob("adapter_model.safetensors"))
    if problem is None and not weights:
        problem = "no model.safetensors"
    for file in weights:
        problem = problem or safetensors_problem(file)
    for name in TORCH_FILES:
        problem = problem or _torch_file_problem(path / name)
    return problem


def newest_sound(output_dir: str | Path) -> Path | None:
    """The newest checkpoint of `output_dir` with no problem; each newer one skipped is said,
    with its problem. None when there is none."""
    from moai_llm.progress import info, warn
    from moai_llm.training.worker.checkpoint import list_checkpoints

    for skipped, checkpoint in enumerate(reversed(list_checkpoints(output_dir))):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if skipped:
                info(f"--resume auto: resuming from {checkpoint}, the newest whole checkpoint")
            return checkpoint
        warn(f"--resume auto: skipping {checkpoint}: {problem}; trying the one before it")
    return None
