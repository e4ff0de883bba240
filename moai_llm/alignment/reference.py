"""The reference model's log-probabilities, computed once and stored with the prepared data.

DPO and IPO compare the policy with a frozen reference. Holding the reference beside the policy
costs a second set of weights and a second forward per step; instead its summed answer
log-prob of every pair's chosen and rejected sequence is computed once before training, over
the prepared preference dataset, and stored there:

    prepared/reference/<key>.safetensors
        chosen    float32 [num_pairs]   the reference's log p(chosen answer | prompt), by pair_index
        rejected  float32 [num_pairs]   ... of the rejected answer
        metadata  key, num_pairs, tokenizer_hash, source (what the key was made from)

`key` names the reference weights (`reference_key(folder)`: a hash of its config and weight
files), so a resumed run, or a second run with the same reference, finds the file and computes
nothing; another reference gets another file. Written to a temporary file and renamed, so a
killed computation leaves no file that looks complete. With LoRA the reference is the base
model: pass the peft model, and its adapter is disabled (`disable_adapter()`) while computing.

    ref = reference_logprobs(model, "prepared/", reference_key("outputs/sft/final_model"))
    ref.chosen[pair_ids], ref.rejected[pair_ids]      # what preference_loss takes as ref_*
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from moai_llm.errors import MoaiInputError

FOLDER = "reference"
_WEIGHT_SUFFIXES = (".safetensors",)
_DEFINING_FILES = ("config.json", "adapter_config.json")


@dataclass
class ReferenceLogps:
    """The stored log-probs, indexed by pair_index."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    path: Path


def reference_key(model_dir: str | os.PathLike) -> str:
    """A hash of the files that define a model folder's weights (config.json, *.safetensors;
    adapter_config.json for an adapter folder): the same folder content, the same key."""
    folder = Path(model_dir)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and
                   (p.name in _DEFINING_FILES or p.name.endswith(_WEIGHT_SUFFIXES)))
    if not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        raise MoaiInputError(f"{folder}: no .safetensors weights to take as the reference",
                             hint="pass a model folder written by moai or transformers (safetensors)")
    h = hashlib.blake2b(digest_size=16)
    for name in names:
        h.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def check_reference_tokenizer(reference_dir: str | os.PathLike, policy_tokenizer_dir: str | os.PathLike,
                              flag: str = "--reference") -> None:
    """Refuse a reference whose vocabulary differs from the policy's (the tokenizer the prepared
    data was made with): the reference would score ids that mean other tokens. A folder without
    a tokenizer.json is taken to share the policy's."""
    ref, policy = _vocabulary(reference_dir), _vocabulary(policy_tokenizer_dir)
    if ref is not None and policy is not None and ref != policy:
        raise MoaiInputError(f"{flag} {reference_dir}: its tokenizer differs from the policy's "
                             f"({len(ref):,} vs {len(policy):,} tokens, or other ids); its log-probs would be of other tokens",
                             hint="use a reference with the policy's tokenizer, e.g. the SFT model the policy starts from")


def _vocabulary(folder: str | os.PathLike) -> dict[str, int] | None:
    """token -> id of a tokenizer folder, added tokens included (None without tokenizer.json)."""
    import json

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MoaiInputError(f"{path}: cannot be read as a tokenizer ({str(exc)[:80]})") from None
    vocab = dict((data.get("model") or {}).get("vocab") or {})
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens") or [] if isinstance(t, dict)})
    return vocab


def stored_path(prepared_dir: str | os.PathLike, key: str) -> Path:
    return Path(prepared_dir) / FOLDER / f"{key}.safetensors"


def load_reference_logprobs(prepared_dir: str | os.PathLike, key: str, num_pairs: int | None = None) -> ReferenceLogps | None:
    """The stored log-probs for `key`, or None when there are none (or they do not match num_pairs)."""
    from safetensors import safe_open

    path = stored_path(prepared_dir, key)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        chosen, rejected = f.get_tensor("chosen"), f.get_tensor("rejected")
    if meta.get("key") != key or (num_pairs is not None and chosen.numel() != num_pairs):
        return None
    return ReferenceLogps(chosen, rejected, path)


def reference_logprobs(model, prepared_dir: str | os.PathLike, key: str, *, batch_rows: int = 8, chunk_size: int = 4096,
                       autocast_dtype: torch.dtype | None = None, source: str = "") -> ReferenceLogps:
    """The reference's log-probs over every pair of a prepared preference dataset: read from
    `prepared/reference/<key>.safetensors` when present, else computed with `model` and stored.

    `model`: the reference (any causal LM moai's log-prob path takes, peft-wrapped or not; a
    peft model is run with its adapter disabled). `autocast_dtype`: e.g. torch.bfloat16 on GPU.
    """
    from moai_llm.data.store import read_manifest

    manifest = read_manifest(prepared_dir)
    if manifest is None or "preference" not in manifest:
        raise MoaiInputError(f"{prepared_dir}: not a prepared preference dataset",
                             hint="run `moai data prepare --mode preference` first")
    num_pairs = manifest["preference"]["num_pairs"]
    if (found := load_reference_logprobs(prepared_dir, key, num_pairs)) is not None:
        return found
    scored = score_prepared(model, prepared_dir, batch_rows=batch_rows, chunk_size=chunk_size,
                            autocast_dtype=autocast_dtype, adapter_off=True)
    chosen, rejected = scored.chosen, scored.rejected
    meta = {"key": key, "num_pairs": str(num_pairs), "tokenizer_hash": str(manifest.get("tokenizer_hash")),
            "source": source}
    path = _write(stored_path(prepared_dir, key), {"chosen": chosen, "rejected": rejected}, meta)
    return ReferenceLogps(chosen, rejected, path)


@dataclass
class ScoredPairs:
    """A model's summed answer log-probs and answer lengths per pair, indexed by pair_index."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def score_prepared(model, prepared_dir, *, batch_rows: int = 8, chunk_size: int = 4096,
                   autocast_dtype: torch.dtype | None = None, adapter_off: bool = False) -> ScoredPairs:
    """`model`'s log-probs of every pair of a prepared preference dataset, without gradients.
    `adapter_off`: score a peft model with its adapter disabled (the LoRA reference)."""
    from moai_llm.alignment.logprobs import model_pair_logprobs, unwrap
    from moai_llm.data.store import load_prepared, read_manifest
    from moai_llm.progress import progress_bar

    num_pairs = read_manifest(prepared_dir)["preference"]["num_pairs"]
    rows = load_prepared(prepared_dir).with_format("numpy")
    out = torch.full((4, num_pairs), float("nan"))
    device = unwrap(model).lm_head.weight.device
    was_training = model.training
    inner = getattr(model, "module", model)
    off = inner.disable_adapter() if adapter_off and hasattr(inner, "disable_adapter") else contextlib.nullcontext()
    model.eval()
    try:
        with off, torch.no_grad(), progress_bar(unit="row", transient=True) as bar:
            task = bar.add_task("scoring pairs", total=len(rows), info="")
            for start in range(0, len(rows), batch_rows):
                part = rows[start:start + batch_rows]
                batch = {k: torch.as_tensor(part[k]).long() for k in ("input_ids", "labels", "position_ids")}
                batch |= {k: [list(map(int, v)) for v in part[k]] for k in ("pair_index", "pair_role")}
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    lp = model_pair_logprobs(model, batch, chunk_size)
                ids = lp.pair_ids.cpu()
                for i, t in enumerate((lp.chosen, lp.rejected, lp.chosen_tokens, lp.rejected_tokens)):
                    out[i, ids] = t.float().cpu()
                bar.advance(task, len(batch["input_ids"]))
    finally:
        model.train(was_training)
    missing = torch.isnan(out).any(0)
    if bool(missing.any()):
        raise MoaiInputError(f"{prepared_dir}: {int(missing.sum())} of {num_pairs} pairs are not in its rows "
                             "(or the model gave NaN)", hint="prepare the data again (--force)")
    return ScoredPairs(out[0], out[1], out[2].long(), out[3].long())


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """safetensors written beside `path` and renamed over it: complete or absent."""
    from safetensors.torch import save_file

    path.parent.mkdir(exist_ok=True)
    from moai_llm.ownership import add_made

    add_made(path.parent.parent, path.parent.name)  # the prepared folder's marker: moai made it
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
