"""Checkpoints: `checkpoints/step-N/`, complete or absent, keeping the last K; read back on resume.

Each checkpoint is a loadable Qwen3 model directory (config.json + model.safetensors +
tokenizer + generation_config.json) plus the trainer state needed to continue exactly:
`optimizer.pt` and `scheduler.pt` (torch.save of plain state dicts, read back with
`weights_only=True`), `rng-rank{R}.pt` (every process's generators) and `trainer_state.json`
(the `TrainerState`: step, samples consumed = data position, NaN counters). It is written into
`checkpoints/.tmp-step-N` and renamed into place, so a crash (even SIGKILL) leaves either
the whole checkpoint or nothing; stale temporary folders (of checkpoints and of final_model/)
are removed on the next start. A full disk while saving removes the partial folder and raises
`DiskFullError` (exit 2) with the size needed and the space free: the last complete checkpoint
stays, and `--resume auto` continues from it once there is room. Folders and files follow the
umask. `fault_point`s mark every gap between the files (tests kill runs there: faults.py).

    >>> import pathlib, tempfile, torch
    >>> from moai_llm import corpora
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.modeling import MoaiForCausalLM
    >>> from moai_llm.tokenizer import load_tokenizer, train_tokenizer
    >>> from moai_llm.training.schedule import build_scheduler, make_schedule
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = load_tokenizer(train_tokenizer(texts, out.parent / "tok", vocab_size=300, show_progress=False))
    >>> m = MoaiForCausalLM(MoaiConfig.from_preset("tiny"))
    >>> opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    >>> sched = build_scheduler(opt, make_schedule("wsd", 1000, warmup=0, min_lr_ratio=0.0))
    >>> path = save_checkpoint(out, step=100, model=m, tokenizer=tok, optimizer_state=opt.state_dict(),
    ...                        scheduler=sched, state={"samples_consumed": 6400}, keep=3)
    >>> latest_checkpoint(out)  # doctest: +ELLIPSIS
    PosixPath('.../out/checkpoints/step-100')
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from moai_llm.adapters import ADAPTER_WEIGHTS, read_adapter, write_adapter
from moai_llm.atomic import follow_umask, remove_leftovers, replace_dir, temp_dir_beside
from moai_llm.errors import MoaiInputError
from moai_llm.faults import fault_point
from moai_llm.ownership import MARKER, marker_text
from moai_llm.tokenizer.folder import put_tokenizer

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
FINAL_MODEL = "final_model"
FINAL_ADAPTER = "final_adapter"  # LoRA runs: the adapter alone, beside the merged final_model/
FINAL_STATE = "training_state.json"  # in final_model/: the step (and loss) its weights are from


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a step-N folder exists only once complete)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = STEP_DIR.match(child.name)
        if m and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a complete checkpoint was saved at."""
    return int(json.loads((Path(path) / STATE_FILE).read_text())["step"])


def remove_stale_temps(output_dir: str | Path) -> int:
    """What saves killed halfway left (temporary checkpoint and final_model folders, old ones
    set aside): never valid, always safe to delete while holding the run folder's lock.
    Returns how many there were."""
    found = 0
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith("."):  # .tmp-step-N, .old-step-N, .step-N.old-*
                shutil.rmtree(child, ignore_errors=True)
                found += 1
    final = Path(output_dir) / FINAL_MODEL
    found += remove_leftovers(final) + remove_leftovers(Path(output_dir) / FINAL_ADAPTER)
    for legacy in Path(output_dir).glob(".tmp-final_model-*"):  # moai's earlier temporary name
        shutil.rmtree(legacy, ignore_errors=True)
        found += 1
    return found


def write_model_dir(target: Path, model: Any, tokenizer: Any, generation_config: Any = None,
                    model_state: dict[str, torch.Tensor] | None = None) -> None:
    """A Qwen3 model directory (config.json, model.safetensors, tokenizer) into `target`, or for
    a LoRA model (peft) the adapter alone (moai_llm.adapters.write_adapter: small). `tokenizer` is a
    tokenizer folder (copied) or object (saved)."""
    if hasattr(model, "peft_config"):
        write_adapter(model, target)
    elif model_state is not None:
        model.save_pretrained(target, state_dict=model_state, safe_serialization=True)
    else:
        model.save_pretrained(target, safe_serialization=True)
    put_tokenizer(tokenizer, target)
    if generation_config is not None:
        generation_config.save_pretrained(target)
    follow_umask(target)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


@contextlib.contextmanager
def _written_or_removed(tmp: Path, target: Path, needed: int | None) -> Iterator[None]:
    """Remove `tmp` when writing it fails; a full disk becomes DiskFullError naming `target`,
    the size `needed` and the space free once `tmp` is gone."""
    from moai_llm.resources import disk_full_error, free_disk, is_disk_full

    try:
        yield
    except Exception as exc:
        # torch.save reports ENOSPC as "file write failed": a disk with no room left tells.
        full = is_disk_full(exc) or (isinstance(exc, (OSError, RuntimeError)) and free_disk(tmp) < 1 << 20)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(target, needed) from exc
        raise


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer_state: dict[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
    rank: int = 0,
    generation_config: Any = None,
    model_state: dict[str, torch.Tensor] | None = None,
    needed: int | None = None,
) -> Path | None:
    """Write checkpoints/step-`step` atomically (all ranks call; rank 0 writes the shared
    files) and delete all but the newest `keep`. Returns the folder on rank 0.

    trainer_state.json holds `state` with `"step": step` (a "step" in `state` must agree).
    `needed` (bytes of one checkpoint) is what a full-disk error says it needs."""
    if state.get("step", step) != step:
        raise ValueError(f"checkpoint step-{step} given a trainer state at step {state['step']}")
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step}"
    tmp_name = root / f".tmp-step-{step}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp_name, ignore_errors=True)
        tmp_name.mkdir()
        fault_point("checkpoint.begin")
    _barrier()
    with _written_or_removed(tmp_name, final, needed):
        torch.save(rng_state(), tmp_name / f"rng-rank{rank}.pt")
        fault_point("checkpoint.after_rng")
        if rank == 0:
            _write_checkpoint_files(tmp_name, step, model, tokenizer, optimizer_state, scheduler,
                                    state, generation_config, model_state)
    if rank == 0:
        fault_point("checkpoint.before_rename")
        replace_dir(tmp_name, final)  # the same step saved again (a resumed run) is replaced whole
        fault_point("checkpoint.after_rename")
        prune_checkpoints(output_dir, keep)
    _barrier()
    return final if rank == 0 else None


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (also at the start of a run: a save killed
    after publishing its checkpoint had not removed the old ones yet)."""
    for stale in list_checkpoints(output_dir)[:-keep]:
        _remove_checkpoint(stale)


def _write_checkpoint_files(tmp: Path, step: int, model: Any, tokenizer: Any, optimizer_state: dict,
                            scheduler: Any, state: dict[str, Any], generation_config: Any,
                            model_state: dict[str, torch.Tensor] | None) -> None:
    write_model_dir(tmp, model, tokenizer, generation_config, model_state)
    (tmp / MARKER).write_text(marker_text("checkpoint", "moai training"), encoding="utf-8")
    fault_point("checkpoint.after_weights")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    fault_point("checkpoint.after_optimizer")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    fault_point("checkpoint.after_scheduler")
    _fsync_dir(tmp)
    fault_point("checkpoint.before_state")
    # trainer_state.json last: its presence marks a complete folder.
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
    _fsync_dir(tmp, only=STATE_FILE)


def _remove_checkpoint(path: Path) -> None:
    """Rename aside first (a half-deleted step-N would look complete), then delete."""
    trash = path.parent / f".old-{path.name}"
    os.replace(path, trash)
    files = sorted(p for p in trash.iterdir() if p.is_file())
    if files:
        files[0].unlink()
        fault_point("checkpoint.deleting_old")
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path, only: str | None = None) -> None:
    """Flush file contents before the rename so a power loss cannot publish empty files."""
    for child in path.iterdir():
        if child.is_file() and (only is None or child.name == only):
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())


def load_optimizer_file(path: Path) -> dict[str, Any]:
    return torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)


def load_trainer_state(path: Path, scheduler: Any, rank: int = 0) -> dict[str, Any]:
    """Restore scheduler and RNG from `path`; return trainer_state.json (the optimizer state is
    loaded by the caller, which knows how the model is sharded)."""
    state = json.loads((path / STATE_FILE).read_text())
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.is_file():  # resumed with more processes than were saved
        rng_file = path / "rng-rank0.pt"
    set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return state


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load model.safetensors (or shards) from a checkpoint into an existing model (a LoRA
    model: the checkpoint's adapter)."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise MoaiInputError(f"{path}: no {ADAPTER_WEIGHTS} (a checkpoint of a run without LoRA)",
                                 hint="resume with the LoRA settings the run was started with")
        read_adapter(model, path)
        return

    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise MoaiInputError(f"{path}: no model.safetensors")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise MoaiInputError(
            f"{path}: weights do not fit the model (missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )


def write_final_model(output_dir: str | Path, model: Any, tokenizer: Any, generation_config: Any,
                      model_state: dict[str, torch.Tensor] | None = None,
                      needed: int | None = None, extra: dict[str, str] | None = None) -> Path:
    """final_model/: written beside (`.final_model.building-*`), then renamed over any previous
    one; at every moment final_model/ is the old complete folder, the new one, or (killed
    between the two renames) absent while the run is resumable from its last checkpoint.
    `extra` adds small text files (name -> content), e.g. the step the weights are from."""
    output_dir = Path(output_dir)
    final = output_dir / FINAL_MODEL
    tmp = temp_dir_beside(final)  # follows the umask (tempfile.mkdtemp would make it 0700)
    fault_point("final.begin")
    with _written_or_removed(tmp, final, needed):
        write_model_dir(tmp, model, tokenizer, generation_config, model_state)
        (tmp / MARKER).write_text(marker_text("model", "moai training"), encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        _fsync_dir(tmp)
    fault_point("final.after_weights")
    old = None
    if final.exists():
        old = final.parent / f".{FINAL_MODEL}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        fault_point("final.between_renames")
    os.replace(tmp, final)
    fault_point("final.after_rename")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def final_model_state(output_dir: str | Path) -> dict[str, Any] | None:
    """What final_model/training_state.json says (step, loss, ...), or None when there is no
    final model (or one written without it)."""
    path = Path(output_dir) / FINAL_MODEL / FINAL_STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
