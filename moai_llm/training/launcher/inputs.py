"""A run's inputs, checked before any worker starts, and the values derived from them.

Bad input costs seconds and leaves the output folder as it was: the output folder must be
writable, the tokenizer must carry moai's special tokens (and agree with a pretrained model's
ids), a prepared dataset must have been made with this tokenizer and for this mode. Raw
sources are prepared (`moai_llm.data.prepare_dataset`, cached) into `<output>/data`.

Nothing here changes the settings the user gave: what is worked out (the sequence length of
a prepared dataset, the tokenizer of a model folder, the vocabulary size) goes into `derived`,
a mapping name -> {"value", "reason"} that run.yaml records beside them.

    >>> from moai_llm.training.settings import resolve_settings
    >>> s, _ = resolve_settings("pretrain", flags={"model": "2b"})
    >>> derived = {}
    >>> model_config, config = model_config_for(s, None, None, derived)   # no tokenizer: the preset's vocabulary
    >>> config.vocab_size, derived["vocab_size"]["reason"]
    (92759, "the 2b preset's vocabulary (no tokenizer given)")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import TrainSettings


def derive(derived: dict[str, dict[str, Any]], name: str, value: Any, reason: str) -> Any:
    """Record a derived value with its reason; returns the value."""
    derived[name] = {"value": value, "reason": reason}
    return value


def check_output_dir(path: str | Path) -> Path:
    """Create the output folder and prove it is writable (a file written and removed)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MoaiInputError(f"--output-dir {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".moai-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise MoaiInputError(f"--output-dir {out}: cannot write there ({exc.strerror or exc})",
                             hint="choose a folder you can write to") from None
    return out


def pretrained_folder(s: TrainSettings) -> Any | None:
    """--pretrained-model checked (moai_llm.pretrained: a Qwen3 folder with complete safetensors
    weights, no folder code unless --trust-remote-code; a hub name is downloaded first), or None
    without one. Nothing is loaded."""
    if not s.pretrained_model:
        return None
    from moai_llm.pretrained import resolve_pretrained

    return resolve_pretrained(s.pretrained_model, trust_remote_code=s.trust_remote_code)


def tokenizer_dir(s: TrainSettings, derived: dict, pretrained: Any = None,
                  required: bool = True) -> Path | None:
    """--tokenizer, else the `pretrained` model folder's own tokenizer; None when there is none
    and `required` is false (a plan-only dry run)."""
    if s.tokenizer:
        path = Path(s.tokenizer)
    elif pretrained is not None and pretrained.tokenizer_dir is not None:
        path = Path(derive(derived, "tokenizer", str(pretrained.tokenizer_dir),
                           "the tokenizer of the --pretrained-model folder"))
    elif not required:
        return None
    elif pretrained is not None:
        raise MoaiInputError(f"--pretrained-model {s.pretrained_model}: has no tokenizer",
                             hint="pass --tokenizer DIR (the tokenizer the model was trained with)")
    else:
        raise MoaiInputError("no tokenizer: pass --tokenizer DIR",
                             hint="train one with `moai tokenizer train`, or use a model folder that has one")
    if path.exists() and not path.is_dir():
        raise MoaiInputError(f"--tokenizer {path}: is a file, not a tokenizer folder",
                             hint="pass the folder that holds tokenizer.json, not the file itself")
    if not path.is_dir():
        raise MoaiInputError(f"--tokenizer {path}: no such folder")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise MoaiInputError(f"--tokenizer {path}: not a tokenizer folder (no tokenizer.json)")
    return path


def check_special_tokens(tokenizer: Any, tok_dir: Path, model_config: Any | None,
                         model_dir: str | None) -> dict[str, int]:
    """The tokenizer must carry ChatML's tokens, or (a third-party tokenizer such as a hub
    model's) its own chat template and end-of-sequence token; a pretrained model must agree on
    their ids."""
    from moai_llm.tokenizer.special import ENDOFTEXT, IM_END, IM_START, PAD

    vocab = tokenizer.get_vocab()
    missing = [t for t in (ENDOFTEXT, IM_START, IM_END) if t not in vocab]
    eos = tokenizer.eos_token_id
    if missing and not (getattr(tokenizer, "chat_template", None) and eos is not None):
        raise MoaiInputError(
            f"--tokenizer {tok_dir}: lacks the special token(s) {', '.join(missing)} that "
            "moai's chat format and end-of-document markers need (and has no chat template and "
            "end-of-sequence token of its own)",
            hint="train a tokenizer with `moai tokenizer train` (it adds them) or extend this one",
        )
    ids = {name: vocab[token] for name, token in (("endoftext", ENDOFTEXT), ("im_start", IM_START),
                                                  ("im_end", IM_END)) if token in vocab}
    if eos is not None:
        ids["eos"] = eos
    fallback = ids.get("endoftext", eos)
    ids["pad"] = vocab.get(PAD, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fallback)
    if model_config is None:
        return ids
    ends = {ids[k] for k in ("endoftext", "im_end", "eos") if k in ids}
    for name, allowed in (("eos_token_id", ends), ("pad_token_id", {ids["pad"]})):
        value = getattr(model_config, name, None)
        values = set(value) if isinstance(value, (list, tuple)) else {value}
        if value is not None and not values & allowed:
            raise MoaiInputError(
                f"tokenizer {tok_dir} and model {model_dir or 'the model config'} disagree: the "
                f"model's {name} is {value} but the tokenizer has {sorted(allowed)}",
                hint="use the tokenizer the model was trained with (the model folder's own)",
            )
    return ids


def pretrained_config(pretrained: Any) -> Any | None:
    """The config of the checked --pretrained-model folder `pretrained` (None without one)."""
    if pretrained is None:
        return None
    from moai_llm.config import MoaiConfig

    return MoaiConfig.from_pretrained(str(pretrained.path))


def context_of(s: TrainSettings, pretrained: Any = None) -> tuple[int, str]:
    """(max_position_embeddings, what it is of) for the model the run trains (`pretrained`: the
    checked --pretrained-model folder)."""
    if pretrained is not None:
        config = pretrained.config
        return int(config.get("max_position_embeddings") or 0), f"--pretrained-model {s.pretrained_model}"
    if s.model_config:
        data = _read_model_file(Path(s.model_config))
        return int(data.get("max_position_embeddings") or 0), f"--model-config {s.model_config}"
    from moai_llm.config import MoaiConfig, list_presets

    try:
        return MoaiConfig.from_preset(s.model).max_position_embeddings, f"the {s.model} preset"
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise MoaiInputError(f"--model {s.model}: no such model preset ({exc})",
                             hint=f"use one of {', '.join(list_presets())}") from None


def sequence_length(s: TrainSettings, given: bool, derived: dict, pretrained: Any = None,
                    manifest: dict | None = None) -> int:
    """The run's sequence length, decided here and nowhere else: --seq-len when `given` (a
    prepared dataset's rows must equal it), else the rows of the prepared dataset (`manifest`),
    else the default. It must fit the model's positions (max_position_embeddings): a length
    you chose (--seq-len or the prepared rows) beyond them is refused; the default is cut to
    them for a pretrained model (a new model trained at the default length gets that many
    positions: model_config_for says so). Recorded in `derived` unless it is the setting."""
    seq_len, reason = s.seq_len, None
    if manifest is not None:
        rows = int(manifest["seq_len"])
        if given and rows != s.seq_len:
            raise MoaiInputError(f"--seq-len {s.seq_len} but {s.dataset[0]} has rows of {rows} tokens",
                                 hint="drop --seq-len or prepare the data again with it")
        if not given:
            seq_len, reason = rows, f"rows of the prepared dataset {s.dataset[0]}"
    longest, of = context_of(s, pretrained)
    if longest and seq_len > longest:
        if given or manifest is not None:
            where = f"--seq-len {seq_len}" if given else f"--dataset {s.dataset[0]} (rows of {seq_len} tokens)"
            raise MoaiInputError(
                f"{where}: longer than the {longest} positions of {of} (max_position_embeddings)",
                hint=f"use --seq-len {longest} or less, or a model with a longer context: a preset or "
                     "--model-config with a larger max_position_embeddings, or RoPE scaling "
                     "(rope_scaling: {type: yarn, factor: F, original_max_position_embeddings: N})")
        if s.pretrained_model:
            seq_len, reason = longest, (f"the {longest} positions of {of} (the default --seq-len "
                                        f"{s.seq_len} is longer)")
    if reason is not None:
        derive(derived, "seq_len", seq_len, reason)
    return seq_len


def is_prepared(s: TrainSettings) -> bool:
    return (len(s.dataset) == 1 and Path(s.dataset[0]).is_dir()
            and (Path(s.dataset[0]) / "manifest.json").is_file())


def check_prepared(s: TrainSettings, tok_dir: Path, derived: dict) -> dict:
    """A prepared folder: whole, made with this tokenizer, for this mode (its row length: `sequence_length`)."""
    from moai_llm.data import read_manifest, tokenizer_hash
    from moai_llm.data.store import check_files

    folder = Path(s.dataset[0])
    manifest = read_manifest(folder)
    if manifest is None:
        raise MoaiInputError(f"--dataset {folder}: the prepared dataset is incomplete",
                             hint="run `moai data prepare` again")
    check_files(folder, manifest)  # shards inside the folder, counts as the manifest says
    want, have = tokenizer_hash(tok_dir), manifest.get("tokenizer_hash")
    if have and want != have:
        raise MoaiInputError(
            f"--dataset {folder} was prepared with another tokenizer than {tok_dir} "
            f"(hash {have[:12]} ≠ {want[:12]})",
            hint=f"prepare it again: moai data prepare ... --tokenizer {tok_dir}",
        )
    from moai_llm.training.settings import DATA_MODE

    if manifest.get("mode") and manifest["mode"] != DATA_MODE[s.mode]:
        raise MoaiInputError(f"--dataset {folder} holds {manifest['mode']} rows but this is `moai {s.mode}`",
                             hint=f"prepare it with `moai data prepare --mode {DATA_MODE[s.mode]}`")
    derive(derived, "prepared_dir", str(folder), "the --dataset folder is prepared")
    return manifest


def prepare_sources(s: TrainSettings, tok_dir: Path, out: Path, derived: dict) -> dict:
    """Raw sources (files, folders, globs, a hub name) prepared into `out/data` (cached)."""
    from moai_llm.data import prepare_dataset

    sources: list[str] | None = list(s.dataset)
    options: dict[str, Any] = {"split": s.dataset_split}
    if s.mode in ("sft", "dpo"):
        options["thinking"] = s.thinking
    from moai_llm.data.sources import EXTENSIONS

    for spec in sources:
        if not Path(spec).exists() and Path(spec).suffix.lower() in EXTENSIONS:
            raise MoaiInputError(f"--dataset {spec}: no such file", hint="check the path (hub datasets "
                                 "are named without a file extension, e.g. wikitext)")
    if s.dataset_config or (len(sources) == 1 and not Path(sources[0]).exists() and "*" not in sources[0]):
        # the seed's `--dataset wikitext --dataset_config wikitext-2-raw-v1`: one hub dataset
        options.update(dataset=sources[0], dataset_config=s.dataset_config)
        sources = None
    target = out / "data"
    from moai_llm.training.settings import DATA_MODE

    manifest = prepare_dataset(sources, str(tok_dir), s.seq_len, str(target), mode=DATA_MODE[s.mode], **options)
    derive(derived, "prepared_dir", str(target), f"prepared from {', '.join(s.dataset)}")
    return manifest


def check_eval_text(s: TrainSettings, given: dict[str, Any], derived: dict) -> None:
    """--eval-text must hold text (in --eval-text-column when named): read now, before
    anything is written, so a mistake costs one line. Without --eval-steps the run evaluates
    every tenth of its steps (recorded in `derived`)."""
    if not s.eval_text:
        return
    from moai_llm.eval.text import read_texts

    try:
        read_texts(list(s.eval_text), s.eval_text_column)
    except MoaiInputError as exc:  # read_texts speaks of `moai eval`'s flags
        def ours(text: str) -> str:
            return (text.replace("--text-column", "--eval-text-column").replace("--text ", "--eval-text ")
                    .replace("--input", "--eval-text"))

        message = ours(str(exc))
        if "--eval-text" not in message:
            message = f"--eval-text: {message}"
        raise MoaiInputError(message, hint=ours(exc.hint) if exc.hint else None) from None
    if "eval_steps" not in given:
        every = max(1, s.max_steps // 10)
        derive(derived, "eval_steps", every, f"--eval-text without --eval-steps: every tenth of "
               f"the {s.max_steps} steps (and before the first)")


def model_config_for(s: TrainSettings, tokenizer: Any | None, ids: dict[str, int] | None,
                     derived: dict, base_config: Any = None, growth: Any = None) -> tuple[dict | None, Any]:
    """(config dict for a new model or None, the config object). The vocabulary is the
    tokenizer's, rounded up; without a tokenizer (a plan-only dry run) the preset's. A
    pretrained model's: `base_config` (read from its folder) grown as `growth` says (recorded
    in `derived`); without `base_config` (moai doctor) the folder is checked and read here."""
    from moai_llm.config import MoaiConfig, checked_config, list_presets
    from moai_llm.training.adaptation import round_up

    if s.pretrained_model:
        config = base_config if base_config is not None else pretrained_config(pretrained_folder(s))
        if growth is not None:
            derive(derived, "embedding_growth", growth.to_dict(), growth.describe())
            if growth.rows_after != config.vocab_size:
                config.vocab_size = derive(derived, "vocab_size", growth.rows_after,
                                           f"{growth.rows_before} → {growth.rows_after} embedding rows")
        return None, config
    if s.model_config:
        config = checked_config(_read_model_file(Path(s.model_config)), f"--model-config {s.model_config}")
        name = s.model_config
    else:
        try:
            config, name = MoaiConfig.from_preset(s.model), f"the {s.model} preset"
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise MoaiInputError(f"--model {s.model}: no such model preset ({exc})",
                                 hint=f"use one of {', '.join(list_presets())}") from None
    if tokenizer is None:
        derive(derived, "vocab_size", config.vocab_size, f"{name}'s vocabulary (no tokenizer given)")
    else:
        vocab = round_up(len(tokenizer), s.vocab_multiple)
        rounded = f" rounded up to a multiple of {s.vocab_multiple}" if vocab != len(tokenizer) else ""
        config.vocab_size = derive(derived, "vocab_size", vocab, f"the tokenizer's {len(tokenizer)} tokens{rounded}")
        config.eos_token_id, config.pad_token_id = ids.get("endoftext", ids.get("eos")), ids["pad"]
        config.bos_token_id = None
    if config.max_position_embeddings < s.seq_len:
        config.max_position_embeddings = derive(
            derived, "max_position_embeddings", s.seq_len,
            f"raised to the training sequence length (the default --seq-len {s.seq_len} is longer "
            f"than {name}'s {config.max_position_embeddings} positions; a new model learns them)")
    return config.to_dict(), config


def _read_model_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MoaiInputError(f"--model-config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:  # a `!!python/...` tag too: safe_load builds no objects
        raise MoaiInputError(f"--model-config {path}: not valid YAML or a tag moai does not read "
                             f"({' '.join(str(exc).split())[:200]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MoaiInputError(f"--model-config {path}: cannot read it ({exc})") from None
    data = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise MoaiInputError(f"--model-config {path}: expected a mapping of model settings")
    data.pop("description", None)
    return data
