"""Checkpoints: `checkpoints/step-N/`, complete or absent, keeping the last K; and resume.

Each checkpoint is a loadable Qwen3 model directory (config.json + model.safetensors +
tokenizer + generation_config.json) plus the trainer state needed to continue exactly:
`optimizer.pt` and `scheduler.pt` (torch.save of plain state dicts, read back with
`weights_only=True`), `rng-rank{R}.pt` (every process's generators) and `trainer_state.json`
(step, samples consumed = data position, NaN counters). It is written into
`checkpoints/.tmp-step-N-*` and renamed into place, so a crash (even SIGKILL) leaves either
the whole checkpoint or nothing; stale temp folders are removed on the next start.

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

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from moai_llm.atomic import replace_dir
from moai_llm.errors import MoaiInputError

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


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


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`None` → start fresh; "auto" → newest checkpoint if any; "latest" → newest, which must
    exist; otherwise a checkpoint folder (or a run folder holding checkpoints)."""
    if not resume:
        return None
    if resume in ("auto", "latest", "true", "True"):
        found = latest_checkpoint(output_dir)
        if found is None and resume != "auto":
            raise MoaiInputError(
                f"--resume: no checkpoint in {checkpoints_dir(output_dir)}",
                hint="run without --resume to start fresh, or use --resume auto",
            )
        return found
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise MoaiInputError(
            f"--resume {resume}: not a checkpoint (no {STATE_FILE}) and no checkpoints/step-N in it",
            hint="pass a checkpoints/step-N folder, a run folder, or --resume auto",
        )
    return found


def remove_stale_temps(output_dir: str | Path) -> None:
    """Folders left by a save that was killed halfway: never valid, always safe to delete."""
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-") or child.name.startswith(".old-"):
                shutil.rmtree(child, ignore_errors=True)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt",
                   "tokenizer.model")


def save_tokenizer(tokenizer: Any, target: Path) -> None:
    """Copy a tokenizer folder's files byte for byte (so data prepared with the original still
    matches its hash), or save a tokenizer object."""
    if isinstance(tokenizer, (str, Path)):
        for name in TOKENIZER_FILES:
            src = Path(tokenizer) / name
            if src.is_file():
                shutil.copyfile(src, target / name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(target)


def write_model_dir(target: Path, model: Any, tokenizer: Any, generation_config: Any = None,
                    model_state: dict[str, torch.Tensor] | None = None) -> None:
    """A Qwen3 model directory (config.json, model.safetensors, tokenizer) into `target`.
    `tokenizer` is a tokenizer folder (copied) or object (saved)."""
    if model_state is not None:
        model.save_pretrained(target, state_dict=model_state, safe_serialization=True)
    else:
        model.save_pretrained(target, safe_serialization=True)
    save_tokenizer(tokenizer, target)
    if generation_config is not None:
        generation_config.save_pretrained(target)


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
) -> Path | None:
    """Write checkpoints/step-N atomically (all ranks call; rank 0 writes the shared files)
    and delete all but the newest `keep`. Returns the folder on rank 0."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step}"
    tmp_name = root / f".tmp-step-{step}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp_name, ignore_errors=True)
        tmp_name.mkdir()
    _barrier()
    torch.save(rng_state(), tmp_name / f"rng-rank{rank}.pt")
    if rank == 0:
        write_model_dir(tmp_name, model, tokenizer, generation_config, model_state)
        torch.save(optimizer_state, tmp_name / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp_name / "scheduler.pt")
        # trainer_state.json last: its presence marks a complete folder.
        (tmp_name / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        _fsync_dir(tmp_name)
        replace_dir(tmp_name, final)  # the same step saved again (a resumed run) is replaced whole
        for stale in list_checkpoints(output_dir)[:-keep]:
            trash = root / f".old-{stale.name}"
            os.replace(stale, trash)  # rename first: a half-deleted step-N would look complete
            shutil.rmtree(trash, ignore_errors=True)
    _barrier()
    return final if rank == 0 else None


def _fsync_dir(path: Path) -> None:
    """Flush file contents before the rename so a power loss cannot publish empty files."""
    for child in path.iterdir():
        if child.is_file():
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
    """Load model.safetensors (or shards) from a checkpoint into an existing model."""
    from safetensors.torch import load_file

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
                      model_state: dict[str, torch.Tensor] | None = None) -> Path:
    """final_model/: written beside, then renamed over any previous one."""
    output_dir = Path(output_dir)
    final = output_dir / "final_model"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-final_model-", dir=output_dir))
    write_model_dir(tmp, model, tokenizer, generation_config, model_state)
    return replace_dir(tmp, final)
