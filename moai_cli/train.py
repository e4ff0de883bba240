"""`moai pretrain` and `moai sft`: parse flags, then hand over to moai_llm.training.

Both commands are built from one option table (`OPTIONS`), grouped in help panels; `--help`
shows each option once, with the mode's effective default (moai_llm.training.settings). The
seed's `train.py --mode pretrain ...` spellings (`--output_dir`, `--max_steps`,
`--tokenizer_path`, `--per_device_train_batch_size`, `--lr_scheduler_type`, `--bf16`, ...)
work unchanged, hidden (moai_cli/ui.py `ALIASES`). Settings come from the mode's defaults,
then `--config FILE`, then flags. `--resume` continues from the newest checkpoint (which must
exist), `--resume auto` does so when there is one, `--resume DIR` from that checkpoint.
`--dry-run` and `--simulate` print the plan; without a tokenizer or dataset they plan with the
model preset's vocabulary and say so.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import typer

from moai_cli.ui import (
    MoaiCommand,
    console,
    given_on_command_line,
    handle_errors,
    print_json,
    set_quiet,
)
from moai_llm.paths import preset_names
from moai_llm.training.settings import WSD_DECAY, mode_defaults

MODEL, DATA, OPTIM, SCHEDULE = "Model", "Data", "Optimisation", "Schedule"
BASE = "Base model: grown vocabulary, stages, LoRA"
PREFERENCE = "Preference objective"
CHECKPOINTS, DISTRIBUTED, OUTPUT = "Checkpoints", "Distributed", "Output"
PLAN = "the plan's"  # shown as the default of what the planner decides


@dataclass(frozen=True)
class Opt:
    """One option of `moai pretrain`/`sft` (and the planning ones of `moai doctor`)."""

    name: str                   # parameter name; a TrainSettings field unless in NOT_SETTINGS
    flag: str                   # the one visible spelling
    type: Any = str
    help: str = ""
    panel: str | None = None
    metavar: str | None = None
    show: str | None = None     # shown default when the setting's default is None
    modes: tuple[str, ...] = ("pretrain", "sft", "dpo")
    sft_help: str | None = None
    hidden: bool = False


OPTIONS = [
    Opt("model", "--model", help=f"Model preset of a new model: {', '.join(preset_names())}.",
        panel=MODEL, metavar="NAME", modes=("pretrain",)),
    Opt("model_config", "--model-config", help="A model config file (JSON/YAML) instead of a preset.",
        panel=MODEL, metavar="FILE", modes=("pretrain",)),
    Opt("pretrained_model", "--pretrained-model", help="Continue pretraining this model folder.",
        panel=MODEL, metavar="DIR", sft_help="Model folder to fine-tune (moai's or any Qwen3 folder)."),
    Opt("tokenizer", "--tokenizer", help="Tokenizer folder.", panel=MODEL, metavar="DIR",
        show="the model folder's"),
    Opt("new_embeddings", "--new-embeddings", help="Rows of tokens the tokenizer added: pieces (the mean "
        "of the rows of their base-tokenizer pieces) or mean (of all rows).", panel=BASE, metavar="HOW",
        modes=("pretrain", "sft")),
    Opt("stages", "--stages", help="Train the new embedding rows first, then everything: "
        "new-embeddings:STEPS,all.", panel=BASE, metavar="SPEC", show="everything from the start",
        modes=("pretrain", "sft")),
    Opt("lora_rank", "--lora-rank", int, "Train LoRA adapters of this rank on the frozen model "
        "(needs the lora extra: peft).", BASE, "R", "off: every weight trains"),
    Opt("lora_alpha", "--lora-alpha", float, "LoRA scaling alpha.", BASE, "A", "2 x rank"),
    Opt("lora_dropout", "--lora-dropout", float, "Dropout on the adapters' inputs.", BASE, "P"),
    Opt("lora_target", "--lora-target", help="Layers that get adapters: all-linear or names "
        "(q_proj,v_proj,...).", panel=BASE, metavar="NAMES"),
    Opt("lora_4bit", "--lora-4bit", bool, "QLoRA: the frozen base in 4 bits (nf4; needs the qlora "
        "extra: bitsandbytes).", BASE, "", "off"),
    Opt("thinking", "--thinking", help="Raw SFT sources with a thinking chat template (Qwen3): off "
        "(answers only) or keep (train the reasoning too).", panel=BASE, metavar="HOW", modes=("sft", "dpo")),
    Opt("preference_loss", "--loss", help="sigmoid (DPO), ipo, simpo or orpo (the last two need no "
        "reference).", panel=PREFERENCE, metavar="NAME", modes=("dpo",)),
    Opt("beta", "--beta", float, "The loss's beta (orpo: the odds-ratio weight).", PREFERENCE, "B",
        "sigmoid/ipo/orpo 0.1, simpo 2.0", modes=("dpo",)),
    Opt("simpo_gamma", "--simpo-gamma", float, "SimPO's target reward margin.", PREFERENCE, "G",
        modes=("dpo",)),
    Opt("label_smoothing", "--label-smoothing", float, "sigmoid: the share of pairs taken as flipped "
        "(conservative DPO).", PREFERENCE, "E", modes=("dpo",)),
    Opt("reference", "--reference", help="Reference model folder (sigmoid, ipo).", panel=PREFERENCE,
        metavar="DIR", show="the starting model (LoRA: the base, adapter off)", modes=("dpo",)),
    Opt("eval_pairs", "--eval-pairs", help="Held-out preference pairs: accuracy and margin every "
        "--eval-steps.", panel=PREFERENCE, metavar="FILE", modes=("dpo",)),
    Opt("dataset", "--dataset", list[str], "Prepared folder, or files/folders/globs/hub names "
        "(prepared first). Repeatable.", DATA, "SRC"),
    Opt("dataset_config", "--dataset-config", help="Hub dataset config name.", panel=DATA, metavar="NAME"),
    Opt("dataset_split", "--dataset-split", help="Hub dataset split.", panel=DATA, metavar="NAME"),
    Opt("seq_len", "--seq-len", int, "Tokens per row (a prepared dataset's own when not given).",
        DATA, "N"),
    Opt("learning_rate", "--learning-rate", float, "Peak learning rate.", OPTIM, "LR"),
    Opt("weight_decay", "--weight-decay", float, "AdamW weight decay (matrices only).", OPTIM, "W"),
    Opt("max_grad_norm", "--max-grad-norm", float, "Gradient clipping norm (0: no clipping).",
        OPTIM, "NORM"),
    Opt("max_bad_steps", "--max-bad-steps", int, "Stop (exit 1) once this many steps had a NaN/inf "
        "loss or gradient norm (each is skipped).", OPTIM, "N"),
    Opt("micro_batch_size", "--batch-size", int, "Sequences per process per micro step.", OPTIM,
        "N", PLAN),
    Opt("gradient_accumulation_steps", "--gradient-accumulation-steps", int,
        "Micro steps per optimizer step.", OPTIM, "N", PLAN),
    Opt("global_batch", "--global-batch", int, "Sequences per optimizer step; give two of "
        "batch size, accumulation, global batch.", OPTIM, "N", "the plan's, by model size"),
    Opt("precision", "--precision", help="auto (bf16 where the GPU has it), bf16 or fp32.",
        panel=OPTIM, metavar="P"),
    Opt("gradient_checkpointing", "--gradient-checkpointing", bool,
        "Recompute activations in backward (--no-gradient-checkpointing: never).", OPTIM, "", PLAN),
    Opt("no_gradient_checkpointing", "--no-gradient-checkpointing", bool, hidden=True),
    Opt("compile", "--compile", bool, "Compile the decoder blocks with torch.compile "
        "(--no-compile: never).", OPTIM, "", PLAN),
    Opt("no_compile", "--no-compile", bool, hidden=True),
    Opt("seed", "--seed", int, "Seed of the initial weights and the data order.", OPTIM, "N"),
    Opt("max_steps", "--max-steps", int, "Optimizer steps.", SCHEDULE, "N"),
    Opt("lr_scheduler", "--lr-scheduler", help="wsd, cosine, linear or constant.", panel=SCHEDULE,
        metavar="NAME"),
    Opt("warmup", "--warmup-steps", float, "Warmup: steps, or a fraction (< 1) of the run.",
        SCHEDULE, "N"),
    Opt("stable", "--stable-steps", float, "WSD stable phase: steps or fraction.", SCHEDULE, "N",
        "what warmup and decay leave"),
    Opt("decay", "--decay-steps", float, "Decay phase: steps or fraction.", SCHEDULE, "N",
        f"wsd: {WSD_DECAY}; cosine/linear: the rest"),
    Opt("min_lr_ratio", "--min-lr-ratio", float, "Final LR as a fraction of the peak.", SCHEDULE, "R"),
    Opt("save_steps", "--save-steps", int, "Save a checkpoint every N steps.", CHECKPOINTS, "N"),
    Opt("save_total_limit", "--save-total-limit", int, "Keep the last K checkpoints.", CHECKPOINTS, "K"),
    Opt("resume", "--resume", bool, "Continue from the newest checkpoint; `--resume auto`: only if "
        "there is one; `--resume DIR`: that one.", CHECKPOINTS, ""),
    Opt("nproc", "--nproc", int, "Processes (GPUs) on this node; several: torchrun.", DISTRIBUTED,
        "N", PLAN),
    Opt("strategy", "--strategy", help="Several processes: ddp or fsdp2.", panel=DISTRIBUTED,
        metavar="NAME", show=PLAN),
    Opt("hardware", "--hardware", help="auto: plan for this machine (probed).", panel=DISTRIBUTED,
        metavar="auto"),
    Opt("simulate", "--simulate", help="Plan for recorded hardware, e.g. 8xA100-80GB; implies "
        "--dry-run.", panel=DISTRIBUTED, metavar="SPEC"),
    Opt("nnodes", "--nnodes", int, "Machines taking part.", DISTRIBUTED, "N"),
    Opt("node_rank", "--node-rank", int, "This machine's rank.", DISTRIBUTED, "N"),
    Opt("master_addr", "--master-addr", help="Rendezvous host.", panel=DISTRIBUTED, metavar="HOST"),
    Opt("master_port", "--master-port", int, "Rendezvous port.", DISTRIBUTED, "PORT", "a free one"),
    Opt("rdzv_endpoint", "--rdzv-endpoint", help="c10d rendezvous HOST:PORT (instead of master).",
        panel=DISTRIBUTED, metavar="EP"),
    Opt("output_dir", "--output-dir", help="Run folder.", panel=OUTPUT, metavar="DIR"),
    Opt("logging_steps", "--logging-steps", int, "Log metrics every N steps.", OUTPUT, "N"),
    Opt("eval_steps", "--eval-steps", int, "Evaluate on held-out rows every N steps (0: never).",
        OUTPUT, "N"),
    Opt("eval_text", "--eval-text", list[str], "Held-out text (files, folders, globs, hub names; "
        "repeatable): bits per byte (eval_bpb) at the start and every --eval-steps.", OUTPUT, "SRC"),
    Opt("eval_text_column", "--eval-text-column", help="The text column of --eval-text.",
        panel=OUTPUT, metavar="NAME", show="detected"),
    Opt("dry_run", "--dry-run", bool, "Print the plan and the launch command; train nothing.",
        OUTPUT, ""),
    Opt("as_json", "--json", bool, "Print the result (or the plan) as JSON.", OUTPUT, ""),
    Opt("trust_remote_code", "--trust-remote-code", bool, "Run Python code a tokenizer or model "
        "folder names (auto_map); only for folders you trust.", MODEL, "", "off"),
    Opt("config", "--config", help="YAML settings file (flags win over it).", metavar="FILE"),
    Opt("seed_mode", "--mode", hidden=True),
]
BY_NAME = {o.name: o for o in OPTIONS}
# Parameters that are not settings (or need translating into one).
NOT_SETTINGS = {"config", "resume", "dry_run", "as_json", "seed_mode", "extra",
                "no_gradient_checkpointing", "no_compile"}


def parameters(names: list[str], mode: str, overrides: dict[str, Opt] | None = None) -> list[inspect.Parameter]:
    """The Typer parameters of `names` (from OPTIONS, or `overrides`), with `mode`'s defaults."""
    defaults = mode_defaults(mode)
    params = []
    for name in names:
        own = name in (overrides or {})  # a command's own option, not a setting: no setting default
        opt = overrides[name] if own else BY_NAME[name]
        default = False if opt.type is bool and (own or opt.name not in defaults) else \
            None if own else defaults.get(opt.name)
        if isinstance(default, list):
            default = default or None
        show: bool | str = True if default is not None else (opt.show or False)
        info = typer.Option(default, opt.flag, help=opt.sft_help if mode != "pretrain" and opt.sft_help else opt.help,
                            rich_help_panel=opt.panel, metavar=opt.metavar, hidden=opt.hidden,
                            show_default=show if opt.type is not bool or opt.show else False)
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=opt.type))
    return params


def command(params: list[inspect.Parameter], body: Any, doc: str) -> Any:
    """A function Typer reads as a command with `params`; calls `body(ctx, values)`."""

    def run(ctx: typer.Context, **values: Any) -> None:
        body(ctx, values)

    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    run.__signature__ = inspect.Signature([ctx, *params])  # type: ignore[attr-defined]
    run.__doc__ = doc
    return run


def settings_flags(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (left out: whatever was not typed)."""
    typed = given_on_command_line(ctx, list(values))
    flags = {k: values[k] for k in typed if k not in NOT_SETTINGS}
    if "no_gradient_checkpointing" in typed:
        flags["gradient_checkpointing"] = False
    if "no_compile" in typed:
        flags["compile"] = False
    return flags


def _body(mode: str):
    def body(ctx: typer.Context, values: dict[str, Any]) -> None:
        with handle_errors():
            flags = settings_flags(ctx, values)
            flags["resume"] = _resume(mode, values["resume"], values.get("extra"))
            if values["seed_mode"] and values["seed_mode"] != mode:
                from moai_llm.errors import MoaiInputError

                raise MoaiInputError(f"--mode {values['seed_mode']} given to `moai {mode}`",
                                     hint=f"use `moai {values['seed_mode']}`")
            run(mode, flags, values["config"], values["dry_run"], values["as_json"])
    return body


def _resume(mode: str, resume: bool, extra: list[str] | None) -> str | None:
    from moai_llm.errors import MoaiInputError

    extra = list(extra or [])
    if extra and not resume:
        raise MoaiInputError(f"unexpected argument {extra[0]!r}", hint=f"see `moai {mode} --help`")
    if len(extra) > 1:
        raise MoaiInputError(f"--resume takes one value, got {' '.join(extra)}")
    return (extra[0] if extra else "latest") if resume else None


def run(mode: str, flags: dict[str, Any], config: str | None, dry_run: bool, as_json: bool) -> None:
    """Resolve settings, prepare (or plan only), launch, report."""
    if as_json:
        set_quiet(True)
    from moai_llm.training.launcher.runner import (
        holding,
        launch_description,
        launch_run,
        prepare_run,
        prepared_input,
        reading,
    )
    from moai_llm.training.settings import resolve_settings

    settings, sources = resolve_settings(mode, config, flags)
    dry_run = dry_run or bool(settings.simulate)  # other hardware can only be planned for
    if dry_run:
        _print_dry_run(launch_description(prepare_run(settings, sources, plan_only=True)), as_json)
        return
    from moai_llm.ownership import refuse_unsafe

    refuse_unsafe(settings.output_dir)  # `/`, home, the current folder: before a lock is made beside them
    # the whole run, torchrun workers and retries included; its prepared dataset held against rebuilds
    with holding(settings.output_dir, mode, settings), reading(prepared_input(settings), mode):
        record = prepare_run(settings, sources)
        code, result = launch_run(record, show_progress=not as_json)
    if code != 0:
        raise typer.Exit(code)
    _report(mode, settings.output_dir, result, as_json)


def _print_dry_run(desc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json({"plan": desc["plan"], "launch": {k: v for k, v in desc.items() if k != "plan"}})
        return
    from moai_llm.training.launcher.launch import format_description

    console.print(format_description(desc), soft_wrap=True, highlight=False, markup=False)


def _report(mode: str, out: str, result: dict[str, Any], as_json: bool) -> None:
    if not result:  # several processes: the run's own record tells how it went
        from moai_llm.training.worker.metrics import read_metrics

        last = [r for r in read_metrics(out) if "loss" in r]
        if last:
            result = {"step": last[-1]["step"], "loss": last[-1]["loss"],
                      "tokens": last[-1].get("tokens"), "seconds": last[-1].get("elapsed_s")}
    summary = {"output_dir": out, "final_model": f"{out}/final_model", "run_yaml": f"{out}/run.yaml",
               "metrics": f"{out}/metrics.jsonl", "loss_png": f"{out}/loss.png", **result}
    if as_json:
        print_json(summary)
        return
    loss = result.get("loss")
    if result.get("complete"):
        console.print(f"[bold green]complete[/]: {out} already trained all {result['step']} steps and "
                      f"wrote final_model/; nothing to do (raise --max-steps to train further)"
                      + (f"; final loss {loss:.4f}" if isinstance(loss, float) else ""),
                      soft_wrap=True, highlight=False)
        console.print(f"{'model:':<8} {out}/final_model", soft_wrap=True, highlight=False, markup=False)
        return
    console.print(f"[bold green]done[/]: {result.get('step', '?')} steps"
                  + (f", final loss {loss:.4f}" if isinstance(loss, float) else "")
                  + (f", {result['tokens'] / max(result['seconds'], 1e-9):,.0f} tokens/s"
                     if result.get("tokens") else ""), soft_wrap=True)
    # Paths are printed whole (soft_wrap): a path broken across lines cannot be copied.
    for label, text in (("model:", f"{out}/final_model"),
                        ("metrics:", f"{out}/metrics.jsonl, {out}/loss.png, tensorboard --logdir {out}/tb"),
                        ("next:", f"moai sft --pretrained-model {out}/final_model --dataset DATA "
                                  f"--output-dir OUT" if mode == "pretrain" else f"moai chat {out}/final_model")):
        console.print(f"{label:<8} {text}", soft_wrap=True, highlight=False, markup=False)


def _names(mode: str) -> list[str]:
    return [o.name for o in OPTIONS if mode in o.modes]


EXTRA = inspect.Parameter("extra", inspect.Parameter.KEYWORD_ONLY,
                          default=typer.Argument(None, hidden=True), annotation=list[str])
pretrain = command(parameters(_names("pretrain"), "pretrain") + [EXTRA], _body("pretrain"),
                   "Pretrain a model: `moai pretrain --model small --tokenizer TOK --dataset DATA "
                   "--output-dir OUT`.")
sft = command(parameters(_names("sft"), "sft") + [EXTRA], _body("sft"),
              "Fine-tune a model on chat data (loss on assistant turns only): `moai sft "
              "--pretrained-model OUT/final_model --dataset qa.jsonl --output-dir SFT`.")

dpo = command(parameters(_names("dpo"), "dpo") + [EXTRA], _body("dpo"),
              "Preference-tune a model on chosen/rejected pairs (DPO, IPO, SimPO, ORPO): `moai dpo "
              "--pretrained-model SFT/final_model --dataset pairs.jsonl --output-dir DPO`.")


def register(app: typer.Typer) -> None:
    app.command(name="pretrain", cls=MoaiCommand)(pretrain)
    app.command(name="sft", cls=MoaiCommand)(sft)
    app.command(name="dpo", cls=MoaiCommand)(dpo)
