"""From resolved settings to a launched run: check inputs, prepare data, size the model, plan,
write run.yaml, launch.

Everything is checked before any worker starts, so bad input costs seconds and leaves the
output folder as it was: the output folder must be writable, the tokenizer must carry moai's
special tokens (and agree with a pretrained model's ids), a prepared dataset must have been
made with this tokenizer, and `--resume` must find a checkpoint. Raw sources are prepared
(DATA's `prepare_dataset`, cached) into `<output>/data` here, in this process.

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.progress import set_quiet
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.training.settings import resolve_settings
    >>> set_quiet(True)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = train_tokenizer(texts, d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    >>> settings, reasons = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 1, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> spec = prepare_run(settings, reasons)      # returns the run.yaml contents
    >>> (d / "run" / "run.yaml").is_file(), spec["plan"]["strategy"]
    (True, 'single')
    >>> code, result = launch_run(spec, show_progress=False)   # 0 on success
    >>> code, result["step"]
    (0, 1)
    >>> set_quiet(False)
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from moai_llm.atomic import write_text_atomic
from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import TrainSettings

RUN_YAML = "run.yaml"


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


def resolve_tokenizer_dir(s: TrainSettings) -> Path:
    if s.tokenizer:
        path = Path(s.tokenizer)
    elif s.pretrained_model and (Path(s.pretrained_model) / "tokenizer.json").is_file():
        path = Path(s.pretrained_model)
    else:
        raise MoaiInputError("no tokenizer: pass --tokenizer DIR",
                             hint="train one with `moai tokenizer train`, or use a model folder that has one")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise MoaiInputError(f"--tokenizer {path}: not a tokenizer folder (no tokenizer.json)")
    return path


def check_special_tokens(tokenizer: Any, tokenizer_dir: Path, model_config: Any | None,
                         model_dir: str | None) -> dict[str, int]:
    """The tokenizer must carry ChatML's tokens; a pretrained model must agree on their ids."""
    from moai_llm.tokenizer.special import ENDOFTEXT, IM_END, IM_START, PAD

    vocab = tokenizer.get_vocab()
    missing = [t for t in (ENDOFTEXT, IM_START, IM_END) if t not in vocab]
    if missing:
        raise MoaiInputError(
            f"--tokenizer {tokenizer_dir}: lacks the special token(s) {', '.join(missing)} that "
            "moai's chat format and end-of-document markers need",
            hint="train a tokenizer with `moai tokenizer train` (it adds them) or extend this one",
        )
    ids = {"endoftext": vocab[ENDOFTEXT], "im_start": vocab[IM_START], "im_end": vocab[IM_END],
           "pad": vocab.get(PAD, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocab[ENDOFTEXT])}
    if model_config is not None:
        where = model_dir or "the model config"
        checks = [("eos_token_id", {ids["endoftext"], ids["im_end"]}), ("pad_token_id", {ids["pad"]})]
        for name, allowed in checks:
            value = getattr(model_config, name, None)
            values = set(value) if isinstance(value, (list, tuple)) else {value}
            if value is not None and not values & allowed:
                raise MoaiInputError(
                    f"tokenizer {tokenizer_dir} and model {where} disagree: the model's {name} is "
                    f"{value} but the tokenizer has {sorted(allowed)}",
                    hint="use the tokenizer the model was trained with (the model folder's own)",
                )
    return ids


def _tokenizer_hash(tokenizer_dir: Path) -> str | None:
    """DATA's fingerprint of a tokenizer folder (the manifest's tokenizer_hash)."""
    try:
        from moai_llm.data import tokenizer_hash  # type: ignore[attr-defined]
    except ImportError:
        try:
            from moai_llm.data.prepare import tokenizer_hash  # type: ignore[no-redef]
        except ImportError:
            return None
    return tokenizer_hash(tokenizer_dir)


def resolve_data(s: TrainSettings, tokenizer_dir: Path, reasons: dict[str, str],
                 out: Path) -> dict[str, Any]:
    """A prepared folder (checked) or raw sources prepared now. Returns the manifest."""
    from moai_llm.data.store import read_manifest

    if not s.dataset:
        raise MoaiInputError("no data: pass --dataset (a prepared folder, files, or a hub name)")
    if len(s.dataset) == 1 and Path(s.dataset[0]).is_dir() and (Path(s.dataset[0]) / "manifest.json").is_file():
        folder = Path(s.dataset[0])
        manifest = read_manifest(folder)
        if manifest is None:
            raise MoaiInputError(f"--dataset {folder}: the prepared dataset is incomplete",
                                 hint="run `moai data prepare` again")
        want = _tokenizer_hash(tokenizer_dir)
        have = manifest.get("tokenizer_hash")
        if want and have and want != have:
            raise MoaiInputError(
                f"--dataset {folder} was prepared with another tokenizer than {tokenizer_dir} "
                f"(hash {have[:12]} ≠ {want[:12]})",
                hint=f"prepare it again: moai data prepare ... --tokenizer {tokenizer_dir}",
            )
        if manifest.get("mode") and manifest["mode"] != s.mode:
            raise MoaiInputError(
                f"--dataset {folder} holds {manifest['mode']} rows but this is `moai {s.mode}`",
                hint=f"prepare it with `moai data prepare --mode {s.mode}`",
            )
        if reasons.get("seq_len") == "flag" and int(manifest["seq_len"]) != s.seq_len:
            raise MoaiInputError(
                f"--seq-len {s.seq_len} but {folder} has rows of {manifest['seq_len']} tokens",
                hint="drop --seq-len or prepare the data again with it",
            )
        s.seq_len = int(manifest["seq_len"])
        reasons["seq_len"] = f"rows of the prepared dataset {folder}"
        s.prepared_dir = str(folder)
        return manifest
    from moai_llm.data import prepare_dataset

    target = out / "data"
    sources: list[str] | None = list(s.dataset)
    options: dict[str, Any] = {"split": s.dataset_split or "train"}
    if s.dataset_config or (len(sources) == 1 and not Path(sources[0]).exists() and "*" not in sources[0]):
        # the seed's `--dataset wikitext --dataset_config wikitext-2-raw-v1`: one hub dataset
        options.update(dataset=sources[0], dataset_config=s.dataset_config)
        sources = None
    manifest = prepare_dataset(sources, str(tokenizer_dir), s.seq_len, str(target), mode=s.mode, **options)
    s.prepared_dir = str(target)
    reasons["prepared_dir"] = f"prepared from {', '.join(s.dataset)}"
    return manifest


def resolve_model_config(s: TrainSettings, tokenizer: Any, ids: dict[str, int],
                         decisions: dict[str, str]) -> tuple[dict | None, Any]:
    """(config dict for a new model or None, the config object) with vocabulary from the tokenizer."""
    from moai_llm.config import MoaiConfig
    from moai_llm.training.model_setup import round_up

    if s.pretrained_model:
        path = Path(s.pretrained_model)
        if not (path / "config.json").is_file():
            raise MoaiInputError(f"--pretrained-model {path}: not a model folder (no config.json)")
        config = MoaiConfig.from_pretrained(str(path))
        if len(tokenizer) > config.vocab_size:
            decisions["vocab_size"] = (f"{config.vocab_size} → {round_up(len(tokenizer), s.vocab_multiple)}: "
                                       f"the tokenizer has grown to {len(tokenizer)} tokens; embeddings grown")
        return None, config
    if s.model_config:
        path = Path(s.model_config)
        if not path.is_file():
            raise MoaiInputError(f"--model-config {path}: no such file")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data = data.get("model", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise MoaiInputError(f"--model-config {path}: expected a mapping of model settings")
        config = MoaiConfig(**data)
    else:
        name = s.model or "small"
        if not s.model:
            decisions["model"] = "small: the default preset (pass --model to choose)"
        try:
            config = MoaiConfig.from_preset(name)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            from moai_llm.config import list_presets

            raise MoaiInputError(f"--model {name}: no such model preset ({exc})",
                                 hint=f"use one of {', '.join(list_presets())}") from None
    vocab = round_up(len(tokenizer), s.vocab_multiple)
    decisions["vocab_size"] = (f"{vocab}: the tokenizer's {len(tokenizer)} tokens"
                               + (f" rounded up to a multiple of {s.vocab_multiple}" if vocab != len(tokenizer) else ""))
    config.vocab_size = vocab
    config.eos_token_id = ids["endoftext"]
    config.pad_token_id = ids["pad"]
    config.bos_token_id = None
    if getattr(config, "max_position_embeddings", s.seq_len) < s.seq_len:
        decisions["max_position_embeddings"] = f"{s.seq_len}: raised to the training sequence length"
        config.max_position_embeddings = s.seq_len
    return config.to_dict(), config


def make_run_plan(s: TrainSettings, config: Any, decisions: dict[str, str]):
    """The hardware plan (HARDWARE's make_plan) with the user's explicit choices applied."""
    import dataclasses

    from moai_llm.hardware.plan import Plan

    overrides: dict[str, Any] = {}
    if s.micro_batch_size:
        overrides["micro_batch_size"] = s.micro_batch_size
    if s.gradient_accumulation_steps:
        overrides["gradient_accumulation_steps"] = s.gradient_accumulation_steps
    if s.nproc:
        overrides["nproc_per_node"] = s.nproc
    if s.gradient_checkpointing is not None:
        overrides["gradient_checkpointing"] = bool(s.gradient_checkpointing)
    if s.precision != "auto":
        overrides["precision"] = s.precision
    if s.nnodes and s.nnodes > 1:
        overrides["nnodes"] = s.nnodes
    if s.strategy:
        overrides["strategy"] = s.strategy
    try:
        from moai_llm.hardware.presets import make_plan
        from moai_llm.hardware.probe import probe, simulate

        facts = simulate(s.simulate) if s.simulate else probe()
        plan = make_plan(facts, config, s.seq_len, global_batch=s.global_batch, **overrides)
    except ImportError:  # planner not installed: one process, the user's numbers or small ones
        plan = Plan(seq_len=s.seq_len, micro_batch_size=s.micro_batch_size or 1,
                    nproc_per_node=s.nproc or 1, device="cuda" if _cuda() else "cpu")
        plan.reasons["plan"] = "no hardware planner available: defaults"
    # The user's explicit numbers win over the planner's, whatever it decided.
    plan = dataclasses.replace(plan, **overrides, reasons=dict(plan.reasons))
    for key in overrides:
        plan.reasons[key] = f"{overrides[key]} (set by you)"
    if s.global_batch and not s.gradient_accumulation_steps:
        per_step = plan.micro_batch_size * plan.world_size
        if s.global_batch % per_step:
            raise MoaiInputError(
                f"--global-batch {s.global_batch} is not a multiple of micro batch "
                f"{plan.micro_batch_size} × {plan.world_size} processes")
        plan.gradient_accumulation_steps = s.global_batch // per_step
        plan.reasons["gradient_accumulation_steps"] = (
            f"{plan.gradient_accumulation_steps} = global batch {s.global_batch} / "
            f"({plan.micro_batch_size} × {plan.world_size} processes)")
    elif s.global_batch and plan.global_batch != s.global_batch:
        raise MoaiInputError(
            f"--global-batch {s.global_batch} ≠ micro batch {plan.micro_batch_size} × accumulation "
            f"{plan.gradient_accumulation_steps} × {plan.world_size} processes",
            hint="give two of --batch-size, --gradient-accumulation-steps, --global-batch, not all three")
    if plan.world_size > 1 and plan.strategy == "single":
        plan.strategy = "ddp"
    plan.seq_len = s.seq_len
    if plan.precision == "bf16" and plan.device == "cpu" and s.precision != "bf16":
        plan.precision = "fp32"
        plan.reasons["precision"] = "fp32 on CPU (bf16 autocast only when asked for with --bf16)"
    decisions.update({f"plan.{k}": v for k, v in plan.reasons.items()})
    return plan


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def prepare_run(s: TrainSettings, reasons: dict[str, str], argv: list[str] | None = None,
                check_only: bool = False) -> dict[str, Any]:
    """Check everything, prepare data, size the model and plan; write run.yaml. Returns it."""
    from moai_llm.config import parameter_count
    from moai_llm.progress import info
    from moai_llm.tokenizer import load_tokenizer
    from moai_llm.training.checkpoint import resolve_resume

    out = check_output_dir(s.output_dir)
    if s.resume:
        resolve_resume(s.resume, out)  # a --resume without a checkpoint fails now, not in a worker
    decisions: dict[str, str] = {}
    tok_dir = resolve_tokenizer_dir(s)
    s.tokenizer = str(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    pretrained_config = None
    if s.pretrained_model:
        from moai_llm.config import MoaiConfig

        if not (Path(s.pretrained_model) / "config.json").is_file():
            raise MoaiInputError(f"--pretrained-model {s.pretrained_model}: not a model folder (no config.json)")
        pretrained_config = MoaiConfig.from_pretrained(s.pretrained_model)
    ids = check_special_tokens(tokenizer, tok_dir, pretrained_config, s.pretrained_model)
    if s.mode == "sft" and not s.pretrained_model:
        raise MoaiInputError("`moai sft` needs --pretrained-model DIR (a model folder to fine-tune)")
    manifest = resolve_data(s, tok_dir, reasons, out)
    info(f"data: {manifest.get('num_rows', '?')} rows of {s.seq_len} tokens in {s.prepared_dir}")
    model_config, config = resolve_model_config(s, tokenizer, ids, decisions)
    plan = make_run_plan(s, config, decisions)
    if not s.nproc:
        s.nproc = plan.nproc_per_node
    spec = {
        "moai_run": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": argv if argv is not None else sys.argv,
        "settings": s.to_dict(),
        "reasons": reasons,
        "decisions": decisions,
        "plan": plan.to_dict(),
        "model_config": model_config,
        "model": {"parameters": parameter_count(config), "vocab_size": config.vocab_size,
                  "from": s.pretrained_model or s.model_config or s.model or "small"},
        "tokenizer": {"path": str(tok_dir), "size": len(tokenizer), "special_ids": ids},
        "data": {k: manifest.get(k) for k in ("num_rows", "num_tokens", "seq_len", "mode",
                                              "packing_efficiency", "tokenizer_hash")},
    }
    write_run_yaml(out, spec)
    return spec


def write_run_yaml(out: Path, spec: dict[str, Any]) -> Path:
    return write_text_atomic(out / RUN_YAML, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))


def read_run_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MoaiInputError(f"{path}: no such run.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def launch_run(spec: dict[str, Any], dry_run: bool = False, show_progress: bool = True) -> tuple[int, dict]:
    """Run the plan of `spec`: in this process for one process, torchrun for several."""
    from moai_llm.hardware.launch import launch
    from moai_llm.hardware.plan import Plan
    from moai_llm.training.loop import train

    s = TrainSettings.from_dict(spec["settings"])
    plan = Plan.from_dict(spec["plan"])
    result: dict[str, Any] = {}

    def in_process(p: Plan) -> int:
        result.update(train(s, p, s.output_dir, spec.get("model_config"), show_progress=show_progress))
        return 0

    rendezvous = {k: v for k, v in {
        "nnodes": s.nnodes if s.nnodes > 1 else None, "node_rank": s.node_rank if s.nnodes > 1 else None,
        "master_addr": s.master_addr, "master_port": s.master_port, "rdzv_endpoint": s.rdzv_endpoint,
    }.items() if v is not None}
    code = launch(plan, ["--run-yaml", str(Path(s.output_dir) / RUN_YAML)], rendezvous=rendezvous or None,
                  dry_run=dry_run, in_process=in_process)
    return code, result
