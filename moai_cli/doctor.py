"""`moai doctor`: this machine's (or a simulated machine's) facts, pass/warn/fail checks with a fix
each, and the training plan moai would choose for a model, with the reason for every decision.

    moai doctor                                   # facts and checks of this machine
    moai doctor --model 2b --seq-len 1024         # ... and the plan for the 2B preset
    moai doctor --simulate 8xA100-80GB --model 3b # hardware you do not have (recorded facts)
    moai doctor --models                          # model presets with exact parameter counts
    moai doctor --json                            # everything, machine-readable

The planning flags are `moai pretrain`'s (declared once, in train.py) with the same defaults,
and the plan comes from the same function as `moai pretrain --dry-run` and the run itself
(moai_llm.training.launcher.runner.plan_for), so the three show one plan. Exit code 0 when no check
fails, 1 otherwise. The library does the work (moai_llm.hardware.probe/planner/checks); this
module renders it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from moai_cli.train import MODEL, OUTPUT, Opt, command, parameters, settings_flags
from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet
from moai_llm.paths import preset_names

STATUS_STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


def register(app: typer.Typer) -> None:
    app.command(name="doctor", cls=MoaiCommand)(doctor)


def _models_table(as_json: bool) -> None:
    from rich.table import Table

    from moai_llm.config import MoaiConfig, list_presets, parameter_count
    from moai_llm.hardware.memory import ModelShape

    rows = []
    for name in list_presets():
        cfg = MoaiConfig.from_preset(name)
        shape = ModelShape.from_config(cfg)
        rows.append({"preset": name, "parameters": parameter_count(cfg), "hidden": shape.hidden,
                     "layers": shape.layers, "heads": f"{shape.heads}/{shape.kv_heads}",
                     "vocab": shape.vocab, "tied": shape.tied})
    if as_json:
        print_json({"models": rows})
        return
    table = Table(title="model presets (exact parameter counts)")
    for col in ("preset", "parameters", "hidden", "layers", "heads q/kv", "vocab", "tied"):
        table.add_column(col, justify="right" if col != "preset" else "left")
    for r in rows:
        table.add_row(r["preset"], f"{r['parameters']:,}", str(r["hidden"]), str(r["layers"]),
                      r["heads"], f"{r['vocab']:,}", "yes" if r["tied"] else "no")
    console.print(table)


def _render_facts(facts) -> None:
    from rich.table import Table

    from moai_llm.hardware.memory import GIB, fmt_bytes

    console.print(f"[bold]hardware[/]  {facts.summary()}  [dim]({facts.source})[/]")
    if facts.gpus:
        table = Table(show_edge=False)
        for col in ("#", "name", "memory", "free", "cc", "power", "PCIe", "NVLink"):
            table.add_column(col)
        for g in facts.gpus:
            table.add_row(
                str(g.index), g.name, f"{g.memory_total_mib:,} MiB",
                f"{g.memory_free_mib:,} MiB" if g.memory_free_mib is not None else "?",
                g.compute_capability, f"{g.power_limit_w:.0f} W" if g.power_limit_w else "?",
                f"gen{g.pcie_gen} x{g.pcie_width}" if g.pcie_gen else "?", str(g.nvlink_links),
            )
        console.print(table)
        if facts.gpu_count > 1:
            short = {"nvlink": "NV", "pcie": "PCI", "none": "-", "self": "X"}
            console.print("[bold]P2P[/] (NV = NVLink, PCI = over PCIe, - = none)")
            for i, row in enumerate(facts.p2p):
                console.print(f"  GPU{i}: " + " ".join(f"{short.get(x, x):>3}" for x in row),
                              highlight=False)
    sw = [f"torch {facts.torch_version}", f"CUDA (torch) {facts.torch_cuda_version or '-'}",
          f"driver {facts.driver_version or '-'} (CUDA {facts.driver_cuda_version or '-'})",
          f"NCCL {facts.nccl_version or '-'}", f"flash-attn {facts.flash_attn_version or '-'}"]
    console.print("[bold]software[/]  " + ", ".join(sw), highlight=False)
    disk = fmt_bytes(facts.disk_free_bytes) if facts.disk_free_bytes is not None else "?"
    console.print(
        f"[bold]host[/]      {facts.cpu_cores} CPU cores, {facts.ram_total_bytes / GIB:.0f} GiB RAM "
        f"({facts.ram_available_bytes / GIB:.0f} available), {disk} free on "
        f"{facts.output_dir or '.'}, InfiniBand: {', '.join(facts.infiniband) or 'none'}, "
        f"nodes {facts.nnodes} (this is node {facts.node_rank})", highlight=False)
    for note in facts.notes:
        if note:
            console.print(f"  [dim]{note}[/]", highlight=False)


def _render_checks(checks) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="checks", show_edge=False)
    table.add_column("status")
    table.add_column("check")
    table.add_column("finding")
    table.add_column("fix")
    for c in checks:
        table.add_row(STATUS_STYLE[c.status], c.name, escape(c.message), escape(c.fix or ""))
    console.print(table)


def _render_plan(plan, est, model_name: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from moai_llm.hardware.memory import fmt_bytes

    console.print(f"[bold]plan[/] for {model_name}: {plan.model}, seq len {plan.seq_len}")
    table = Table(show_edge=False)
    table.add_column("decision")
    table.add_column("value")
    table.add_column("reason")
    values = {
        "nproc_per_node": plan.nproc_per_node, "nnodes": plan.nnodes, "strategy": plan.strategy,
        "precision": plan.precision, "micro_batch_size": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "global_batch": f"{plan.global_batch} ({plan.tokens_per_step:,} tokens/step)",
        "gradient_checkpointing": plan.gradient_checkpointing,
        "loss_chunk_size": plan.loss_chunk_size, "tf32": plan.tf32, "backend": plan.backend,
        "attention": plan.attention,
        "memory": fmt_bytes(plan.predicted_peak_bytes or 0),
    }
    for key, reason in plan.reasons.items():
        value = values.get(key, plan.env.get(key, "-"))
        table.add_row(key, escape(str(value)), escape(reason))
    console.print(table)
    parts = ", ".join(f"{name} {fmt_bytes(b)}" for name, b in est.rows())
    console.print(f"[bold]memory per process[/]  {parts}", highlight=False)
    if plan.env:
        console.print("[bold]environment[/]  " + " ".join(f"{k}={v}" for k, v in plan.env.items()),
                      highlight=False)
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


# The planning options of `moai pretrain`, declared once in train.py: same flags, same defaults,
# same plan (moai_llm.training.launcher.runner.plan_for).
PLAN_OPTIONS = ["seq_len", "global_batch", "micro_batch_size", "gradient_accumulation_steps",
                "precision", "gradient_checkpointing", "no_gradient_checkpointing", "compile",
                "no_compile", "max_steps", "nproc", "nnodes", "strategy", "simulate", "output_dir",
                "lora_rank", "lora_target", "lora_dropout", "lora_4bit"]
DOCTOR_OPTIONS = {
    "model": Opt("model", "--model", help=f"Plan for this model: a preset ({', '.join(preset_names())}), "
                 "a model folder or a config file.", panel=MODEL, metavar="NAME"),
    "models": Opt("models", "--models", bool, "List the model presets with exact parameter counts.",
                  OUTPUT, ""),
    "plan_mode": Opt("plan_mode", "--mode", help="Plan for `moai pretrain`, `sft` or `dpo` (its defaults; a "
                     "preference step is planned as an SFT step over the same packed rows: the reference's "
                     "log-probs are precomputed, no reference weights are held).", panel=MODEL, metavar="MODE",
                     show="pretrain"),
    "list_hardware": Opt("list_hardware", "--list-hardware", bool,
                         "List the recorded GPUs usable with --simulate.", OUTPUT, ""),
}


def _model_flags(model: str) -> dict[str, str]:
    """--model as the setting it names: a preset, a model folder or a config file."""
    from moai_llm.config import list_presets
    from moai_llm.errors import MoaiInputError

    path = Path(model)
    if model in list_presets():
        return {"model": model}
    if path.is_dir() and (path / "config.json").exists():
        return {"pretrained_model": model}
    if path.is_file() and path.suffix in (".json", ".yaml", ".yml"):
        return {"model_config": model}
    raise MoaiInputError(f"--model {model}: not a preset, model folder or config file",
                         hint="presets: " + ", ".join(list_presets()) + " (moai doctor --models)")


def _as_model_flag(model: str, work: Any) -> Any:
    """`work()`, with a refusal that names the setting --model stood for (--pretrained-model
    or --model-config) naming --model instead: the flag the user typed."""
    from moai_llm.errors import MoaiInputError

    try:
        return work()
    except MoaiInputError as exc:
        text = str(exc)
        for flag in ("--pretrained-model", "--model-config"):
            text = text.replace(f"{flag} {model}", f"--model {model}")
        if text == str(exc):
            raise
        raise MoaiInputError(text, hint=exc.hint) from None


def _doctor(ctx: typer.Context, values: dict[str, Any]) -> None:
    """Check the hardware and software, and show the training plan moai would choose."""
    with handle_errors():
        as_json = values["as_json"]
        if as_json:
            set_quiet(True)
        if values["models"]:
            _models_table(as_json)
            return
        if values["list_hardware"]:
            from moai_llm.hardware.simulate import list_hardware

            names = list_hardware()
            print_json({"hardware": names}) if as_json else console.print("\n".join(names))
            return
        from moai_llm.hardware.checks import FAIL, run_checks, worst
        from moai_llm.hardware.memory import ModelShape
        from moai_llm.hardware.planner import estimate_for
        from moai_llm.training.launcher.inputs import model_config_for
        from moai_llm.training.launcher.runner import facts_for, plan_for
        from moai_llm.training.settings import resolve_settings

        flags = settings_flags(ctx, {k: v for k, v in values.items() if k not in ("model", "plan_mode")})
        model = values["model"]
        settings, _ = resolve_settings(values["plan_mode"] or "pretrain", None,
                                       {**flags, **(_model_flags(model) if model else {})})
        facts = facts_for(settings, settings.output_dir)
        plan = est = shape = None
        if model:
            _, config = _as_model_flag(model, lambda: model_config_for(settings, None, None, {}))
            shape = ModelShape.from_config(config)
            plan = plan_for(settings, config, facts)
            est = estimate_for(shape, plan)
        checks = run_checks(facts, plan, shape.params if shape else None,
                            keep_checkpoints=settings.save_total_limit)
        status = worst(checks)
        if as_json:
            print_json({
                "status": status, "facts": facts.to_dict(), "checks": [c.to_dict() for c in checks],
                "model": ({"name": model, "parameters": shape.params} if shape else None),
                "plan": plan.to_dict() if plan else None, "memory": est.to_dict() if est else None,
            })
        else:
            _render(facts, checks, status, plan, est, model, shape)
        if status == FAIL:
            raise typer.Exit(1)


def _render(facts, checks, status, plan, est, model, shape) -> None:
    _render_facts(facts)
    if model:
        console.print(f"[bold]model[/]     {model}: {shape.params:,} parameters", highlight=False)
    _render_checks(checks)
    if plan is not None:
        _render_plan(plan, est, model)
    else:
        console.print("[dim]add --model 2b --seq-len 1024 to see the plan for a model[/]")
    console.print(f"overall: {STATUS_STYLE[status]}")


doctor = command(
    parameters(["model", "plan_mode", *PLAN_OPTIONS, "models", "list_hardware", "as_json"], "pretrain",
               overrides=DOCTOR_OPTIONS),
    _doctor, "Check the hardware and software, and show the training plan moai would choose.")
