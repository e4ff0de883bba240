"""`moai pretrain` and `moai sft`: parse flags, then hand over to moai_llm.training.

The seed's `train.py --mode pretrain ...` flags work unchanged (`--output_dir`,
`--max_steps`, `--tokenizer_path`, `--per_device_train_batch_size`, `--lr_scheduler_type`, ...).
Settings come from presets/training/<mode>.yaml, then `--config FILE`, then flags.
`--resume` continues from the newest checkpoint (which must exist), `--resume auto` does so
when there is one, `--resume DIR` from that checkpoint.
"""

from __future__ import annotations

from typing import Any

import typer

from moai_cli.ui import console, handle_errors, print_json, set_quiet

RESUME_HELP = "Continue from the newest checkpoint; `--resume auto`: only if there is one; `--resume DIR`: that one."


def register(app: typer.Typer) -> None:
    app.command(name="pretrain")(pretrain)
    app.command(name="sft")(sft)


def _run(mode: str, flags: dict[str, Any], config: str | None, resume: bool, extra: list[str] | None,
         dry_run: bool, as_json: bool, seed_mode: str | None) -> None:
    from moai_llm.errors import MoaiInputError

    if seed_mode and seed_mode != mode:
        raise MoaiInputError(f"--mode {seed_mode} given to `moai {mode}`", hint=f"use `moai {seed_mode}`")
    extra = list(extra or [])
    if extra and not resume:
        raise MoaiInputError(f"unexpected argument {extra[0]!r}", hint="see `moai " + mode + " --help`")
    if len(extra) > 1:
        raise MoaiInputError(f"--resume takes one value, got {' '.join(extra)}")
    flags["resume"] = (extra[0] if extra else "latest") if resume else None
    if as_json:
        set_quiet(True)

    from moai_llm.training.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings

    settings, reasons = resolve_settings(mode, config, flags)
    if settings.simulate:
        dry_run = True  # a plan for hardware this machine does not have can only be printed
    spec = prepare_run(settings, reasons)
    code, result = launch_run(spec, dry_run=dry_run, show_progress=not as_json)
    if code != 0:
        raise typer.Exit(code)
    if dry_run:
        return
    out = settings.output_dir
    if not result:  # several processes: the run's own record tells how it went
        from moai_llm.training.metrics import read_metrics

        last = [r for r in read_metrics(out) if "loss" in r]
        if last:
            result = {"step": last[-1]["step"], "loss": last[-1]["loss"], "tokens": last[-1].get("tokens"),
                      "seconds": last[-1].get("elapsed_s")}
    summary = {"output_dir": out, "final_model": f"{out}/final_model", "run_yaml": f"{out}/run.yaml",
               "metrics": f"{out}/metrics.jsonl", "loss_png": f"{out}/loss.png", **result}
    if as_json:
        print_json(summary)
        return
    loss = result.get("loss")
    console.print(f"[bold green]done[/]: {result.get('step', '?')} steps"
                  + (f", final loss {loss:.4f}" if isinstance(loss, float) else "")
                  + (f", {result['tokens'] / max(result['seconds'], 1e-9):,.0f} tokens/s" if result.get("tokens") else ""))
    console.print(f"model:   {out}/final_model\nmetrics: {out}/metrics.jsonl, {out}/loss.png, tensorboard --logdir {out}/tb")
    next_cmd = (f"moai sft --pretrained-model {out}/final_model --dataset DATA --output-dir OUT"
                if mode == "pretrain" else f"moai chat {out}/final_model")
    console.print(f"next:    {next_cmd}")


# Parameters of `pretrain`/`sft` that are not settings (or need translating into one).
_NOT_SETTINGS = {"config", "resume", "dry_run", "as_json", "seed_mode", "extra", "bf16", "fp32", "gc_seed"}


def _flags(args: dict) -> dict:
    """The command's parameters as settings overrides (None = not given on the command line)."""
    flags = {k: v for k, v in args.items() if k not in _NOT_SETTINGS}
    flags["dataset"] = list(args["dataset"]) if args["dataset"] else None
    flags["precision"] = "bf16" if args["bf16"] else ("fp32" if args["fp32"] else None)
    flags["gradient_checkpointing"] = True if args["gc_seed"] else args["gradient_checkpointing"]
    return flags


def pretrain(
    model: str = typer.Option(None, "--model", "-m", help="Model preset: tiny, small, 0.5b, 2b, 3b, seed-3b."),
    model_config: str = typer.Option(None, "--model-config", "--model_config", help="A model config file (JSON/YAML)."),
    pretrained_model: str = typer.Option(None, "--pretrained-model", "--pretrained_model", help="Continue pretraining this model folder."),
    tokenizer: str = typer.Option(None, "--tokenizer", "--tokenizer-path", "--tokenizer_path", help="Tokenizer folder."),
    dataset: list[str] = typer.Option(None, "--dataset", "--input", "-i", help="Prepared folder, or files/folders/globs/hub names (prepared first)."),
    dataset_config: str = typer.Option(None, "--dataset-config", "--dataset_config", help="Hub dataset config name."),
    dataset_split: str = typer.Option(None, "--dataset-split", "--dataset_split", help="Hub dataset split."),
    output_dir: str = typer.Option(None, "--output-dir", "--output_dir", "-o", help="Run folder."),
    config: str = typer.Option(None, "--config", help="YAML settings file (flags win)."),
    max_steps: int = typer.Option(None, "--max-steps", "--max_steps", help="Optimizer steps."),
    learning_rate: float = typer.Option(None, "--learning-rate", "--learning_rate", "--lr", help="Peak learning rate."),
    min_lr_ratio: float = typer.Option(None, "--min-lr-ratio", help="Final LR as a fraction of the peak."),
    lr_scheduler: str = typer.Option(None, "--lr-scheduler", "--lr-scheduler-type", "--lr_scheduler_type", help="wsd | cosine | linear | constant."),
    warmup: float = typer.Option(None, "--warmup-steps", "--warmup_steps", "--warmup", help="Warmup: steps, or a fraction (< 1) of the run."),
    stable: float = typer.Option(None, "--stable-steps", "--stable", help="WSD stable phase: steps or fraction."),
    decay: float = typer.Option(None, "--decay-steps", "--decay", help="Decay phase: steps or fraction."),
    weight_decay: float = typer.Option(None, "--weight-decay", "--weight_decay"),
    max_grad_norm: float = typer.Option(None, "--max-grad-norm", "--max_grad_norm", help="Gradient clipping norm."),
    micro_batch_size: int = typer.Option(None, "--batch-size", "--per-device-train-batch-size", "--per_device_train_batch_size", help="Sequences per process per micro step."),
    gradient_accumulation_steps: int = typer.Option(None, "--gradient-accumulation-steps", "--gradient_accumulation_steps"),
    global_batch: int = typer.Option(None, "--global-batch", help="Sequences per optimizer step (accumulation follows)."),
    seq_len: int = typer.Option(None, "--seq-len", "--max-seq-length", "--max_seq_length", help="Tokens per row."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast over fp32 weights."),
    fp32: bool = typer.Option(False, "--fp32", help="No autocast."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward (default: the plan's choice)."),
    gc_seed: bool = typer.Option(False, "--gradient_checkpointing", hidden=True),
    save_steps: int = typer.Option(None, "--save-steps", "--save_steps"),
    save_total_limit: int = typer.Option(None, "--save-total-limit", "--save_total_limit", help="Keep the last K checkpoints."),
    eval_steps: int = typer.Option(None, "--eval-steps", "--eval_steps", help="Evaluate on held-out rows every N steps."),
    logging_steps: int = typer.Option(None, "--logging-steps", "--logging_steps"),
    seed: int = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    nproc: int = typer.Option(None, "--nproc", "--nproc-per-node", help="Processes (GPUs) on this node; several → torchrun."),
    strategy: str = typer.Option(None, "--strategy", help="Several processes: ddp or fsdp2 (default: the plan's choice)."),
    hardware: str = typer.Option(None, "--preset", help="Hardware preset for the plan: auto (probe this machine)."),
    simulate: str = typer.Option(None, "--simulate", help="Plan for COUNTxNAME hardware (e.g. 8xA100-80GB); implies --dry-run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and launch command; train nothing."),
    nnodes: int = typer.Option(None, "--nnodes"),
    node_rank: int = typer.Option(None, "--node-rank", "--node_rank"),
    master_addr: str = typer.Option(None, "--master-addr", "--master_addr"),
    master_port: int = typer.Option(None, "--master-port", "--master_port"),
    rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", "--rdzv_endpoint"),
    seed_mode: str = typer.Option(None, "--mode", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    extra: list[str] = typer.Argument(None, hidden=True),
) -> None:
    """Pretrain a model: `moai pretrain --model small --tokenizer TOK --dataset DATA -o OUT`."""
    with handle_errors():
        flags = _flags(locals())
        _run("pretrain", flags, config, resume, extra, dry_run, as_json, seed_mode)


def sft(
    pretrained_model: str = typer.Option(None, "--pretrained-model", "--pretrained_model", "--model-path", "--model_path", help="Model folder to fine-tune (moai's or any Qwen3 folder)."),
    tokenizer: str = typer.Option(None, "--tokenizer", "--tokenizer-path", "--tokenizer_path", help="Tokenizer folder (default: the model's own)."),
    dataset: list[str] = typer.Option(None, "--dataset", "--input", "-i", help="Prepared SFT folder, or chat/instruction files or hub names."),
    dataset_config: str = typer.Option(None, "--dataset-config", "--dataset_config"),
    dataset_split: str = typer.Option(None, "--dataset-split", "--dataset_split"),
    output_dir: str = typer.Option(None, "--output-dir", "--output_dir", "-o"),
    config: str = typer.Option(None, "--config", help="YAML settings file (flags win)."),
    max_steps: int = typer.Option(None, "--max-steps", "--max_steps"),
    learning_rate: float = typer.Option(None, "--learning-rate", "--learning_rate", "--lr"),
    lr_scheduler: str = typer.Option(None, "--lr-scheduler", "--lr-scheduler-type", "--lr_scheduler_type"),
    warmup: float = typer.Option(None, "--warmup-steps", "--warmup_steps", "--warmup"),
    weight_decay: float = typer.Option(None, "--weight-decay", "--weight_decay"),
    micro_batch_size: int = typer.Option(None, "--batch-size", "--per-device-train-batch-size", "--per_device_train_batch_size"),
    gradient_accumulation_steps: int = typer.Option(None, "--gradient-accumulation-steps", "--gradient_accumulation_steps"),
    global_batch: int = typer.Option(None, "--global-batch"),
    seq_len: int = typer.Option(None, "--seq-len", "--max-seq-length", "--max_seq_length"),
    bf16: bool = typer.Option(False, "--bf16"),
    fp32: bool = typer.Option(False, "--fp32"),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    gc_seed: bool = typer.Option(False, "--gradient_checkpointing", hidden=True),
    save_steps: int = typer.Option(None, "--save-steps", "--save_steps"),
    save_total_limit: int = typer.Option(None, "--save-total-limit", "--save_total_limit"),
    eval_steps: int = typer.Option(None, "--eval-steps", "--eval_steps"),
    logging_steps: int = typer.Option(None, "--logging-steps", "--logging_steps"),
    seed: int = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    nproc: int = typer.Option(None, "--nproc", "--nproc-per-node"),
    simulate: str = typer.Option(None, "--simulate"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    nnodes: int = typer.Option(None, "--nnodes"),
    node_rank: int = typer.Option(None, "--node-rank", "--node_rank"),
    master_addr: str = typer.Option(None, "--master-addr", "--master_addr"),
    master_port: int = typer.Option(None, "--master-port", "--master_port"),
    rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", "--rdzv_endpoint"),
    seed_mode: str = typer.Option(None, "--mode", hidden=True),
    as_json: bool = typer.Option(False, "--json"),
    extra: list[str] = typer.Argument(None, hidden=True),
) -> None:
    """Fine-tune a model on chat data (loss on assistant turns only):
    `moai sft --pretrained-model OUT/final_model --dataset qa.jsonl -o SFT`."""
    with handle_errors():
        flags = _flags(locals())
        _run("sft", flags, config, resume, extra, dry_run, as_json, seed_mode)
