"""Find and load a model for chatting: a model folder, a run's output folder, or any Qwen3 dir.

`moai chat outputs/sft` should just work, so a run folder resolves to its `final_model/`, or,
while training is still going, to its newest *complete* `checkpoints/step-N/` (saying which).
Weights are read from safetensors only (pickled `.bin` files can run code when loaded), and
`trust_remote_code` is passed on only when the user asked for it. Every way this can go wrong
on the user's side (not a model folder, no tokenizer, tokenizer larger than the embedding)
is a `MoaiInputError` with a message that names the folder and what to do.

    >>> model, tokenizer, info = load_for_chat("outputs/sft")          # doctest: +SKIP
    >>> info["path"], info["device"], info["dtype"]                    # doctest: +SKIP
    ('outputs/sft/final_model', 'cpu', 'float32')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.progress import info as say

_STEP_DIR = re.compile(r"^(?:step|checkpoint)-(\d+)$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
DTYPES = ("bfloat16", "float16", "float32")


def has_weights(folder: Path) -> bool:
    """True when `folder` holds a config and safetensors weights (single file or sharded)."""
    return (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file()
        or (folder / "model.safetensors.index.json").is_file()
    )


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def check_model_path(path: str | Path) -> None:
    """Refuse at once a model path that does not exist and is not a hub name (before anything
    slow, such as reading stdin or importing torch, happens)."""
    root = Path(path).expanduser()
    if not root.exists() and not _REPO_ID.match(str(path)):
        raise MoaiInputError(f"{root}: no such folder", "pass a model folder, a run's output folder or a hub name")


def resolve_model_dir(path: str | Path) -> tuple[Path, str]:
    """The model folder to load for `path`, and how it was found ("model", "final_model",
    "adapter" / "final_adapter" (a LoRA adapter folder), "checkpoint", or "hub" for a hub name
    such as Qwen/Qwen3-0.6B, fetched into the hub cache).

    >>> resolve_model_dir("outputs/sft")                               # doctest: +SKIP
    (PosixPath('outputs/sft/final_model'), 'final_model')
    """
    root = Path(path).expanduser()
    check_model_path(path)
    if not root.exists():  # a hub name
        from moai_llm.pretrained import download

        return download(str(path), flag=""), "hub"
    if not root.is_dir():
        raise MoaiInputError(f"{root} is a file, not a model folder",
                             "pass the folder that holds config.json and model.safetensors")
    if has_weights(root):
        return root, "model"
    if has_weights(root / "final_model"):
        return root / "final_model", "final_model"
    for folder, source in ((root, "adapter"), (root / "final_adapter", "final_adapter")):
        if (folder / "adapter_config.json").is_file():  # a LoRA adapter: loaded onto its base, merged
            return folder, source
    for checkpoints in (root / "checkpoints", root):
        steps = sorted(
            ((int(m.group(1)), d) for d in checkpoints.glob("*-*")
             if d.is_dir() and (m := _STEP_DIR.match(d.name)) and has_weights(d)),
            reverse=True,
        )
        if steps:
            return steps[0][1], "checkpoint"
    if (root / "config.json").is_file() and any(root.glob("*.bin")):
        raise MoaiInputError(
            f"{root} has only pickled .bin weights; moai loads safetensors only (a .bin file can run code)",
            "convert it once: load it with transformers in a trusted environment and "
            "save_pretrained(..., safe_serialization=True)",
        )
    raise MoaiInputError(
        f"{root} is not a model folder: no config.json + model.safetensors, no final_model/ "
        "and no complete checkpoints/step-N/",
        "pass a moai final_model/, a run's output folder, or a Qwen3 model directory",
    )


def _tokenizer_dir(model_dir: Path, tokenizer_path: str | Path | None) -> Path:
    if tokenizer_path is not None:
        folder = Path(tokenizer_path).expanduser()
        if folder.is_file():
            raise MoaiInputError(f"--tokenizer {folder}: is a file, not a tokenizer folder",
                                 "pass the folder that holds tokenizer.json, not the file itself")
        if not folder.is_dir():
            raise MoaiInputError(f"--tokenizer {folder}: no such folder")
        if not _has_tokenizer(folder):
            raise MoaiInputError(f"{folder}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
        return folder
    # A checkpoint without tokenizer files falls back to its run folder (…/run/checkpoints/step-N).
    for folder in (model_dir, model_dir.parent, model_dir.parent.parent):
        if _has_tokenizer(folder):
            return folder
    raise MoaiInputError(
        f"{model_dir} has no tokenizer (tokenizer.json / tokenizer_config.json)",
        "save the tokenizer into the model folder, or pass --tokenizer DIR",
    )


def pick_device(device: str | None = None) -> str:
    """`device` when given, else "cuda" when a GPU is visible, else "cpu"."""
    import torch

    if device:
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            raise MoaiInputError(f"--device {device}: not a device", hint="use cpu, cuda or cuda:N") from None
        if parsed.type not in ("cpu", "cuda", "mps"):
            raise MoaiInputError(f"--device {device}: moai runs on cpu, cuda or mps")
        if parsed.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise MoaiInputError(f"--device {device}: no CUDA GPU is visible", hint="use --device cpu")
            if parsed.index is not None and parsed.index >= count:
                raise MoaiInputError(f"--device {device}: this machine has {count} CUDA GPU(s) "
                                     f"(cuda:0..cuda:{count - 1})")
        if parsed.type == "mps" and not torch.backends.mps.is_available():
            raise MoaiInputError(f"--device {device}: MPS is not available here", hint="use --device cpu")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Ids that end an answer: <|im_end|>, <|endoftext|>, the tokenizer's eos and the
    generation config's eos ids (int or list)."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|endoftext|>"):
        if token in vocab:
            ids.append(vocab[token])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is not None:
        ids.extend([eos] if isinstance(eos, int) else list(eos))
    return sorted(set(ids))


def load_for_chat(
    path: str | Path,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    tokenizer_path: str | Path | None = None,
    thinking: bool = False,
) -> tuple[Any, Any, dict]:
    """Load (model, tokenizer, info) for chatting, on GPU in bf16 when present else CPU fp32.

    `info` holds: path, source (see `resolve_model_dir`), device, dtype,
    parameters, context_length, chat_template (bool), stop_ids, model_class, generation
    (sampling defaults from generation_config.json, possibly empty), template_kwargs (passed to
    apply_chat_template: `enable_thinking=thinking` for templates with thinking blocks, such as
    Qwen3's; off by default, as `moai data prepare --thinking off` trains).
    """
    model_dir, source = resolve_model_dir(path)
    _announce(path, model_dir, source)
    tok_dir = _tokenizer_dir(model_dir, tokenizer_path)
    adapted = None
    if source in ("adapter", "final_adapter"):
        from moai_llm.adapters import load_adapter_model

        say(f"loading the LoRA adapter {model_dir} onto its base model (merged)")
        adapted = load_adapter_model(model_dir, trust_remote_code=trust_remote_code)
        config = adapted.config
    else:
        config = _load_config(model_dir, trust_remote_code)
    tokenizer = _load_tokenizer(tok_dir, model_dir, config, trust_remote_code)
    device = pick_device(device)
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    _torch_dtype(dtype)
    generation_config = _generation_config(model_dir)  # before the weights: they read it too
    if adapted is None:
        check_memory_for(model_dir, config, device, dtype)
        _check_tensors(model_dir, config)
    model = adapted if adapted is not None else _load_weights(model_dir, config, dtype,
                                                               trust_remote_code)
    _check_finite(model, model_dir)
    model.to(device=device, dtype=_torch_dtype(dtype)).eval()
    _warm_up(model)
    template = getattr(tokenizer, "chat_template", None) or ""
    info = {
        "path": str(model_dir),
        "source": source,
        "tokenizer_path": str(tok_dir),
        "device": device,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "context_length": int(getattr(config, "max_position_embeddings", 0) or 0) or None,
        "chat_template": bool(template),
        "stop_ids": stop_token_ids(tokenizer, generation_config),
        "model_class": type(model).__name__,
        "generation": _sampling_defaults(generation_config),
        "template_kwargs": {"enable_thinking": bool(thinking)} if "enable_thinking" in template else {},
    }
    return model, tokenizer, info


def _announce(path: str | Path, model_dir: Path, source: str) -> None:
    if source == "final_model":
        say(f"loading {model_dir} (the run's final model)")
    elif source == "checkpoint":
        say(f"no final_model/ yet: loading the newest complete checkpoint, "
            f"{model_dir.relative_to(Path(path).expanduser())}")


def _load_config(model_dir: Path, trust_remote_code: bool) -> Any:
    """The model's config, its values checked for type and range, after checking its weights'
    headers (a truncated or damaged file is named, not a traceback)."""
    from transformers import AutoConfig

    from moai_llm.jsonfile import read_json_object
    from moai_llm.pretrained import check_safetensors

    where = model_dir / "config.json"
    raw = read_json_object(where, hint="the file is damaged; save or download the model again")
    check_safetensors(model_dir)
    if raw.get("model_type") == "qwen3":
        from moai_llm.config import checked_config

        checked_config({k: v for k, v in raw.items() if k != "auto_map"}, str(where))
    try:  # trust_remote_code explicit: never run a folder's code unasked
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=bool(trust_remote_code))
    except Exception as exc:  # transformers' strict config raises its own error types
        raise MoaiInputError(f"{where}: not a model config ({' '.join(str(exc).split())[:200]})") from None


def check_memory_for(model_dir: Path, config: Any, device: str, dtype: str) -> None:
    """Refuse a model whose weights (plus a tenth for activations and the KV cache) cannot fit
    the memory of `device`, before anything is allocated (exit 2, with the estimate)."""
    import torch

    from moai_llm.config import parameter_count
    from moai_llm.resources import available_memory, human_bytes

    try:
        params = parameter_count(config)
    except (AttributeError, TypeError):
        return  # not a Qwen3-shaped config: transformers sizes it
    need = int(params * torch.empty((), dtype=_torch_dtype(dtype)).element_size() * 1.1)
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        room, source = free, f"free memory of {device}"
    else:
        memory = available_memory()
        room, source = memory.bytes, memory.source
    if need > room:
        raise MoaiInputError(
            f"{model_dir}: the model needs about {human_bytes(need)} of memory ({params:,} parameters "
            f"in {dtype}), but {human_bytes(room)} is available ({source})",
            hint="use a machine with more memory, a smaller dtype (--dtype bfloat16), or check config.json")


def _check_tensors(model_dir: Path, config: Any) -> None:
    """Every tensor a Qwen3 config promises, with its shape and a float dtype (headers only)."""
    if getattr(config, "model_type", None) != "qwen3":
        return
    from moai_llm.pretrained import check_safetensors
    from moai_llm.weights import check_weights

    files, _ = check_safetensors(model_dir)
    check_weights(files, config.to_dict(), str(model_dir))


def _check_finite(model: Any, model_dir: Path) -> None:
    from moai_llm.weights import non_finite_tensor

    bad = non_finite_tensor(model.named_parameters())
    if bad is not None:
        raise MoaiInputError(f"{model_dir}: tensor {bad} holds NaN/inf values (a broken model)",
                             hint="use an earlier checkpoint, or train or download the model again")


def _load_tokenizer(tok_dir: Path, model_dir: Path, config: Any, trust_remote_code: bool) -> Any:
    """The tokenizer, refused when it has more tokens than the model has embedding rows."""
    from moai_llm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok_dir, trust_remote_code=bool(trust_remote_code))
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise MoaiInputError(
            f"vocabulary mismatch: the tokenizer in {tok_dir} has {len(tokenizer)} tokens but the "
            f"model in {model_dir} has {rows} embedding rows",
            "use the tokenizer the model was trained with (or grow the embeddings first)",
        )
    return tokenizer


def _torch_dtype(dtype: str) -> Any:
    import torch

    torch_dtype = getattr(torch, str(dtype), None)
    if str(dtype) not in DTYPES or not isinstance(torch_dtype, torch.dtype):
        raise MoaiInputError(f"--dtype {dtype}: not a dtype moai runs models in", "use bfloat16, float16 or float32")
    return torch_dtype


def _load_weights(model_dir: Path, config: Any, dtype: str, trust_remote_code: bool) -> Any:
    """The model from safetensors only, without transformers' progress bar (one file loads in
    well under a second)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _model_class(config).from_pretrained(
            model_dir, dtype=_torch_dtype(dtype), use_safetensors=True,
            trust_remote_code=bool(trust_remote_code))
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _generation_config(model_dir: Path) -> Any:
    from transformers import GenerationConfig

    file = model_dir / "generation_config.json"
    if file.is_file():
        try:
            return GenerationConfig.from_pretrained(model_dir)
        except (ValueError, TypeError, OSError, KeyError, AttributeError) as exc:
            raise MoaiInputError(f"{file}: {' '.join(str(exc).split())[:200]}",
                                 hint="fix or delete that file (it only holds sampling defaults)") from None
    return None


def _sampling_defaults(generation_config: Any) -> dict[str, Any]:
    """Sampling settings the model folder's generation_config.json sets (greedy: temperature 0)."""
    if generation_config is None:
        return {}
    defaults = {}
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens"):
        value = getattr(generation_config, key, None)
        if value is not None:
            defaults[key] = value
    if generation_config.do_sample is False:
        defaults["temperature"] = 0.0
    return defaults


def _warm_up(model: Any) -> None:
    """One tiny cached forward, so one-time costs (kernel selection, allocator growth, lazy
    buffers) are not billed to the first answer's time to first token."""
    import torch

    from moai_llm.inference.generation import SamplingParams, generate_ids

    with torch.inference_mode():
        for _ in generate_ids(model, [0, 0], SamplingParams(temperature=0, max_new_tokens=2)):
            pass


def _model_class(config: Any) -> Any:
    """moai's own Qwen3 implementation for Qwen3 configs; transformers' Auto class otherwise."""
    from transformers import AutoModelForCausalLM

    if getattr(config, "model_type", None) == "qwen3":
        try:
            from moai_llm.modeling import MoaiForCausalLM
        except ImportError:  # the modeling package is being built; transformers' Qwen3 is identical
            return AutoModelForCausalLM
        return MoaiForCausalLM
    return AutoModelForCausalLM
