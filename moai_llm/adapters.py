"""The LoRA adapter folder: written by training, read by training, chat, eval and export.

An adapter folder (a checkpoint of a LoRA run, or `final_adapter/`) holds
`adapter_model.safetensors` (the adapter's tensors alone: never whole embedding matrices; the
new tokens' rows are in peft's trainable-token tensors), `adapter_config.json` (as peft writes
it, with the base model's name) and `moai_adapter.json` (the base model and its embedding rows,
so the base can be rebuilt: loaded, then grown to the adapter's rows). This module sits below
training and inference, so none of them imports the other to read an adapter.

- `write_adapter(peft_model, folder)` / `read_adapter(peft_model, folder)`: the tensors, out and
  back in (checkpoints); `save_adapter(...)`: a whole folder with its tokenizer, complete or absent.
- `load_adapter_model(folder)`: the base with the adapter on top, merged (`merge`) unless asked.
- `is_adapter_dir(folder)`: whether a folder is one.

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> is_adapter_dir(folder)
    False
    >>> _ = (folder / "adapter_config.json").write_text("{}")
    >>> is_adapter_dir(folder)
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError, MoaiRunError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SIDE_FILE = "moai_adapter.json"  # base model and embedding rows, to rebuild the adapter's base


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """peft asks a transformers model `is_gradient_checkpointing`, which transformers 5 answers
    with a FutureWarning a person can do nothing about; moai asks the new name itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_adapter_dir(folder: str | os.PathLike) -> bool:
    """True for a folder written by `save_adapter` (or any peft LoRA adapter folder)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_state(peft_model: Any) -> dict[str, Any]:
    """The adapter's tensors (what a checkpoint stores instead of the whole model)."""
    from peft import get_peft_model_state_dict

    # Never whole embedding matrices (peft would add them when the vocabulary was resized): the
    # new rows are in the adapter's trainable-token tensors.
    return get_peft_model_state_dict(peft_model, save_embedding_layers=False)


def load_adapter_state(peft_model: Any, state: dict[str, Any]) -> None:
    """Put checkpointed adapter tensors back; every adapter tensor must be there."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    params = dict(peft_model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in params if k not in set(getattr(result, "missing_keys", []))}
    # a tied lm_head's trainable rows are the embedding's (one tensor, saved once)
    missing = [k for k in getattr(result, "missing_keys", []) if ("lora_" in k or "trainable_tokens" in k)
               and not (k in params and params[k].data_ptr() in loaded)]
    if missing:
        raise MoaiRunError(f"the checkpoint's adapter lacks {len(missing)} tensors (first: {missing[0]})")


def write_adapter(peft_model: Any, folder: str | os.PathLike, base_model: str | None = None) -> None:
    """The adapter's files into the existing `folder` (the module docstring lists them)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    # copies: a tied lm_head shares its trainable rows with the embedding, and safetensors
    # refuses tensors that share memory
    state = {k: v.detach().to("cpu").clone() for k, v in adapter_state(peft_model).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = peft_model.peft_config["default"]
    base = str(base_model or config.base_model_name_or_path or "")
    config.save_pretrained(str(folder))  # adapter_config.json, as peft writes it
    data = json.loads((folder / ADAPTER_CONFIG).read_text())
    data["base_model_name_or_path"] = base
    (folder / ADAPTER_CONFIG).write_text(json.dumps(data, indent=2) + "\n")
    rows = peft_model.get_input_embeddings().weight.shape[0]
    (folder / SIDE_FILE).write_text(json.dumps({"base_model": base, "vocab_rows": int(rows)}, indent=2) + "\n")


def read_adapter(peft_model: Any, folder: str | os.PathLike) -> None:
    """Put the tensors `write_adapter` wrote in `folder` back into `peft_model`."""
    from safetensors.torch import load_file

    load_adapter_state(peft_model, load_file(str(Path(folder) / ADAPTER_WEIGHTS)))


def save_adapter(peft_model: Any, output_dir: str | os.PathLike, base_model: str, tokenizer: Any = None) -> Path:
    """Write the adapter (`write_adapter`) and the tokenizer (a folder, copied, or an object,
    saved) into `output_dir`, complete or not at all; files follow the umask."""
    from moai_llm.atomic import building, follow_umask
    from moai_llm.tokenizer.folder import put_tokenizer

    out = Path(output_dir)
    with building(out) as tmp:
        write_adapter(peft_model, tmp, base_model)
        put_tokenizer(tokenizer, tmp)
        follow_umask(tmp)
    return out


def merge(peft_model: Any) -> Any:
    """The base model with the adapter folded in: a plain model (no peft modules or key prefixes)."""
    merged = peft_model.merge_and_unload()
    bad = [k for k in merged.state_dict() if "lora_" in k or "base_layer" in k or "base_model.model" in k
           or "token_adapter" in k]
    if bad:
        raise MoaiRunError(f"merging the adapter left peft names in the model ({bad[0]})")
    return merged


def base_model_of(folder: str | os.PathLike) -> tuple[str, int]:
    """(the base model an adapter folder names, its embedding rows: 0 when not recorded)."""
    folder = Path(folder)
    side = json.loads((folder / SIDE_FILE).read_text()) if (folder / SIDE_FILE).is_file() else {}
    base_name = side.get("base_model") or json.loads((folder / ADAPTER_CONFIG).read_text()).get(
        "base_model_name_or_path")
    if not base_name:
        raise MoaiInputError(f"{folder}: the adapter does not say which base model it belongs to",
                             hint=f"add {SIDE_FILE} with base_model")
    return base_name, int(side.get("vocab_rows") or 0)


def load_adapter_model(adapter_dir: str | os.PathLike, dtype: Any = None, trust_remote_code: bool = False,
                       merged: bool = True) -> Any:
    """The adapter's base (rebuilt: loaded, embedding grown to the adapter's rows) with the
    adapter on top, merged into a plain model unless `merged=False`."""
    import torch
    from peft import PeftModel

    from moai_llm.pretrained import load_model as load_base
    from moai_llm.pretrained import resolve_pretrained
    from moai_llm.tokenizer.model_vocab import grow_embeddings

    folder = Path(adapter_dir)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise MoaiInputError(f"{folder}: no {ADAPTER_WEIGHTS} (moai loads safetensors adapters only)")
    base_name, rows = base_model_of(folder)
    base = resolve_pretrained(base_name, trust_remote_code=trust_remote_code)
    model = load_base(base, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    if rows > model.get_input_embeddings().weight.shape[0]:
        grow_embeddings(model, rows, "mean")  # new tokens' rows come from the adapter itself
    with peft_quietly():
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    return merge(peft_model) if merged else peft_model
