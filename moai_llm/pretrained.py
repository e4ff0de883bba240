"""Start from a model someone else trained: find it (local folder or hub name) and check it.

`--pretrained-model` takes either a folder (one moai wrote, or one stock transformers saved
from a third-party checkpoint) or a hub name such as `Qwen/Qwen3-0.6B`, downloaded with progress
into the Hugging Face cache, safetensors, config and tokenizer files only (no pickles, no code).
Before anything is built the folder is checked, cheaply and without loading the weights:

- config.json exists and parses; the architecture is Qwen3 (`model_type == "qwen3"`);
- config.json's values have the right type and range (`config.checked_config`);
- the weights are safetensors (a folder with only `pytorch_model.bin` is refused: unpickling
  can run code), every file's header is complete (a truncated download is named), a sharded
  index names files inside the folder only, the embedding matrix has the rows config.json
  promises, and every tensor config.json promises is there with its shape and a float dtype
  (`weights.check_weights`); the values are checked once loaded (training's `build_model`);
- generation_config.json is valid JSON that transformers accepts;
- `auto_map` (the folder's own Python code) is refused unless trust_remote_code was asked for;
  every loader here passes `trust_remote_code` explicitly.

What the folder carries is kept: its tokenizer, special-token ids, chat template and
generation config (see `Pretrained`). Qwen's checkpoints have more embedding rows than their
tokenizer has tokens (151,936 rows for 151,669 tokens); `vocab_rows` and `tokenizer_size` say so.
Every problem is a `MoaiInputError` (exit 2) naming the model and what to do.

    >>> import tempfile
    >>> resolve_pretrained(tempfile.mkdtemp())            # an empty folder
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: --pretrained-model ...: no config.json (not a model folder)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.progress import info

FLAG = "--pretrained-model"
# What a hub download fetches: weights as safetensors, configs and tokenizer files; never
# pickles (*.bin, *.pt) or Python files.
HUB_PATTERNS = [
    "*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
]
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")
_CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class Pretrained:
    """A checked pretrained model folder and what it carries."""

    path: Path                    # the local folder (a hub snapshot for hub names)
    name: str                     # what the user passed
    source: str                   # "folder" or "hub"
    config: dict[str, Any]        # config.json, parsed
    weights: tuple[Path, ...]     # safetensors files, all with complete headers
    vocab_rows: int               # rows of the embedding matrix (config vocab_size)
    tied: bool                    # lm_head shares the embedding matrix
    tokenizer_dir: Path | None    # the folder itself when it holds a tokenizer
    tokenizer_size: int | None    # tokens in that tokenizer (added tokens included)
    special_token_ids: dict[str, int] = field(default_factory=dict)  # eos_token, <|im_end|>, ...
    chat_template: bool = False   # the tokenizer carries a chat template
    generation_config: dict[str, Any] | None = None  # generation_config.json, parsed

    def describe(self) -> str:
        """One line for a person: what was found."""
        padded = ""
        if self.tokenizer_size is not None and self.vocab_rows > self.tokenizer_size:
            padded = f" ({self.vocab_rows - self.tokenizer_size} padding rows)"
        return (f"{self.name}: Qwen3, {self.config.get('num_hidden_layers')} layers x "
                f"{self.config.get('hidden_size')} hidden, {self.vocab_rows:,} embedding rows{padded}, "
                f"tokenizer {self.tokenizer_size if self.tokenizer_size is not None else 'none'}"
                f"{', chat template' if self.chat_template else ''}")


def resolve_pretrained(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False,
                       revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Pretrained:
    """The checked model for `--pretrained-model`: a local folder, else a hub name (downloaded).

    A folder that exists wins over a hub name spelled the same way (as in transformers).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MoaiInputError(f"{FLAG} {text}: is a file, not a model folder",
                                 hint="pass the folder that holds config.json and model.safetensors")
        return check_folder(path, name=text, trust_remote_code=trust_remote_code)
    if _REPO_ID.match(text) and not text.startswith((".", "~")):
        folder = download(text, revision=revision, cache_dir=cache_dir)
        return check_folder(folder, name=text, source="hub", trust_remote_code=trust_remote_code)
    raise MoaiInputError(f"{FLAG} {text}: no such folder (nor a hub name like Qwen/Qwen3-0.6B)",
                         hint="pass a model folder or a hub model name")


def download(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
             flag: str = FLAG) -> Path:
    """Download (or find in the hub cache) the safetensors, config and tokenizer files of `repo_id`.

    Messages name the model as `flag repo_id` (the CLI option it came from, if any).
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    from moai_llm.progress import is_quiet

    where = f"{flag} {repo_id}".strip()
    info(f"{repo_id}: fetching safetensors, config and tokenizer files from the hub (or its cache)")
    restore = not are_progress_bars_disabled()
    if is_quiet():
        disable_progress_bars()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS)
    except hub_errors.GatedRepoError:
        raise MoaiInputError(f"{where}: a gated model; accept its license on the hub page and log in "
                             "(`hf auth login`)") from None
    except hub_errors.RepositoryNotFoundError:
        raise MoaiInputError(f"{where}: no such local folder nor model on the hub (a private model needs "
                             "`hf auth login`)", hint="check the spelling, e.g. Qwen/Qwen3-0.6B") from None
    except hub_errors.RevisionNotFoundError:
        raise MoaiInputError(f"{where}: revision {revision!r} not found on the hub") from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
        from moai_llm.hub import offline_requested

        offline = " (HF_HUB_OFFLINE is set)" if offline_requested() else ""
        raise MoaiInputError(f"{where}: no such local folder, and the hub model cannot be downloaded{offline} "
                             "nor found in the hub cache",
                             hint="connect to the internet once (or copy the model folder here and pass "
                                  f"its path); detail: {str(exc).splitlines()[0][:160]}") from None
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise MoaiInputError(f"{where}: download failed ({str(exc).splitlines()[0][:160]})",
                             hint="check the network and the name, or pass a local model folder") from None
    finally:
        if restore:
            enable_progress_bars()
    return Path(folder)


def check_folder(folder: str | os.PathLike, *, name: str | None = None, source: str = "folder",
                 trust_remote_code: bool = False) -> Pretrained:
    """Check a model folder (see the module docstring) and describe it; nothing is loaded."""
    folder = Path(folder)
    name = name or str(folder)
    where = f"{FLAG} {name}"
    config = _read_json(folder / "config.json", where, required=True)
    model_type = config.get("model_type")
    if model_type != "qwen3":
        archs = ", ".join(config.get("architectures") or []) or "no architectures listed"
        raise MoaiInputError(f"{FLAG} {name}: architecture {model_type or 'unknown'!r} ({archs}); moai trains "
                             "Qwen3 models (model_type 'qwen3') only",
                             hint="start from a Qwen3 checkpoint, e.g. Qwen/Qwen3-0.6B-Base")
    tokenizer_config = _read_json(folder / "tokenizer_config.json", where, required=False) or {}
    for file, data in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if data.get("auto_map") and not trust_remote_code:
            classes = ", ".join(sorted(str(v) for v in _flat(data["auto_map"])))[:160]
            raise MoaiInputError(f"{FLAG} {name}: {file} asks to run the folder's own Python code "
                                 f"(auto_map: {classes}); moai runs a folder's code only with --trust-remote-code",
                                 hint="pass --trust-remote-code only if you trust where this folder came from")
    from moai_llm.config import checked_config
    from moai_llm.weights import check_weights

    checked_config({k: v for k, v in config.items() if k != "auto_map"}, f"{where}: config.json")
    weights, shapes = check_safetensors(folder, where)
    rows = int(config.get("vocab_size") or 0)
    embed = shapes.get("model.embed_tokens.weight")
    if embed is None:
        raise MoaiInputError(f"{FLAG} {name}: the weights have no model.embed_tokens.weight (not a Qwen3 "
                             "causal LM checkpoint)")
    if embed[0] != rows:
        raise MoaiInputError(f"{FLAG} {name}: config.json says vocab_size {rows} but the embedding in the "
                             f"weights has {embed[0]} rows", hint="the folder's config and weights do not belong together")
    tied = bool(config.get("tie_word_embeddings", False))
    if not tied and "lm_head.weight" not in shapes:
        raise MoaiInputError(f"{FLAG} {name}: config.json says the output layer is untied but the weights have "
                             "no lm_head.weight", hint="the folder's config and weights do not belong together")
    check_weights(weights, config, where)
    tok_dir, size, ids = _tokenizer_facts(folder, tokenizer_config)
    template = (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file() \
        or bool(tokenizer_config.get("chat_template"))
    generation = _read_json(folder / "generation_config.json", where, required=False)
    if generation is not None:
        check_generation_config(generation, f"{where}: generation_config.json")
    return Pretrained(path=folder, name=name, source=source, config=config, weights=tuple(weights), vocab_rows=rows,
                      tied=tied, tokenizer_dir=tok_dir, tokenizer_size=size, special_token_ids=ids,
                      chat_template=template, generation_config=generation)


def check_generation_config(data: dict[str, Any], where: str) -> None:
    """A generation_config.json that transformers refuses (e.g. `max_new_tokens: -1`) is a
    MoaiInputError naming the file, not a traceback when the model loads."""
    from transformers import GenerationConfig

    try:
        GenerationConfig.from_dict(dict(data))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MoaiInputError(f"{where}: {' '.join(str(exc).split())[:200]}",
                             hint="fix or delete that file (it only holds sampling defaults)") from None


def _flat(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value] if value else []


def _read_json(path: Path, where: str, required: bool) -> dict | None:
    if not path.is_file():
        if required:
            raise MoaiInputError(f"{where}: no {path.name} (not a model folder)",
                                 hint="pass the folder that holds config.json and model.safetensors, or a hub name")
        return None
    from moai_llm.jsonfile import read_json_object

    return read_json_object(path, f"{where}: {path}", hint="the file is damaged; download or save the model again")


def check_safetensors(folder: Path, where: str | None = None) -> tuple[list[Path], dict[str, list[int]]]:
    """The safetensors files of `folder` and every tensor's shape, read from the headers only.

    A missing shard, a truncated or damaged file, or a folder with only pickled weights is a
    `MoaiInputError` naming the file.
    """
    from safetensors import safe_open

    where = where or str(folder)  # how messages name the model ("--pretrained-model X" or the folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = (_read_json(index, where, required=True) or {}).get("weight_map") or {}
        if not isinstance(weight_map, dict):
            raise MoaiInputError(f"{where}: {index.name}: weight_map is not a mapping of tensor names to files")
        for name in sorted(set(map(str, weight_map.values()))):
            if not _inside(name):
                raise MoaiInputError(f"{where}: {index.name} names a shard outside the model folder ({name!r})",
                                     hint="shards are file names in the folder itself; download the model again")
        files = [folder / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if not files or missing:
            raise MoaiInputError(f"{where}: {index.name} lists shards that are not there: "
                                 f"{', '.join(missing[:3]) or '(none listed)'}", hint="download the model again")
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        pickles = sorted({p.name for pattern in _PICKLES for p in folder.glob(pattern)})
        if pickles:
            raise MoaiInputError(f"{where}: has only pickled weights ({', '.join(pickles[:3])}); moai loads "
                                 "safetensors only (unpickling a file can run code)",
                                 hint="convert it once in a trusted environment: load it with transformers and "
                                      "save_pretrained(..., safe_serialization=True)")
        raise MoaiInputError(f"{where}: no model.safetensors (no weights)",
                             hint="pass a folder with safetensors weights, or a hub name")
    shapes: dict[str, list[int]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    shapes[key] = list(handle.get_slice(key).get_shape())
        except Exception as exc:  # safetensors raises SafetensorError for damaged headers
            raise MoaiInputError(f"{where}: {file} is damaged or incomplete ({exc})",
                                 hint="a download was probably cut off; download or save the model again") from None
    return files, shapes


def _inside(name: str) -> bool:
    """A shard name that stays in its folder: relative, no `..`, no drive or NUL.

    >>> [_inside(n) for n in ("model-00001.safetensors", "../x", "/etc/passwd", "a/../../b", "sub/m.safetensors")]
    [True, False, False, False, True]
    """
    from pathlib import PurePosixPath

    path = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and "\0" not in name and not path.is_absolute() and ".." not in path.parts \
        and ":" not in path.parts[0]


def _tokenizer_facts(folder: Path, tokenizer_config: dict) -> tuple[Path | None, int | None, dict[str, int]]:
    """(tokenizer folder, its size, special-token ids) read with `tokenizers` (no transformers)."""
    file = folder / "tokenizer.json"
    if not file.is_file():
        return (folder if tokenizer_config else None), None, {}
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:
        raise MoaiInputError(f"{FLAG} {folder}: cannot read tokenizer.json ({exc})") from None
    ids: dict[str, int] = {}
    for key in _SPECIAL_NAMES:
        value = tokenizer_config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and tok.token_to_id(value) is not None:
            ids[key] = tok.token_to_id(value)
    for token in _CHAT_TOKENS:
        if tok.token_to_id(token) is not None:
            ids[token] = tok.token_to_id(token)
    return folder, tok.get_vocab_size(with_added_tokens=True), ids


def load_model(pretrained: Pretrained, dtype: Any = None, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """moai's Qwen3 model with the folder's weights (fp32 unless `dtype` says otherwise).

    moai's own implementation is used for every Qwen3 folder, so `auto_map` code never runs.
    `kwargs` go to `from_pretrained` (e.g. `attn_implementation=plan.attention`,
    `quantization_config=` for QLoRA).
    """
    import torch

    from moai_llm.modeling import MoaiForCausalLM

    return MoaiForCausalLM.from_pretrained(str(pretrained.path), dtype=dtype or torch.float32, use_safetensors=True,
                                           trust_remote_code=trust_remote_code, **kwargs)


def load_tokenizer(pretrained: Pretrained, trust_remote_code: bool = False) -> Any:
    """The folder's own tokenizer (special tokens and chat template as saved)."""
    from transformers import AutoTokenizer

    if pretrained.tokenizer_dir is None:
        raise MoaiInputError(f"{FLAG} {pretrained.name}: has no tokenizer", hint="pass --tokenizer DIR")
    return AutoTokenizer.from_pretrained(str(pretrained.tokenizer_dir), trust_remote_code=trust_remote_code)
