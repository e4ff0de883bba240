"""`moai quickstart`: tokenizer → data → pretrain → sft → chat on this machine, offline."""

from __future__ import annotations

import typer

from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet
from moai_llm.quickstart import MEASURED, QuickstartSizes


def register(app: typer.Typer) -> None:
    app.command(name="quickstart", cls=MoaiCommand)(quickstart)


def quickstart(
    output_dir: str = typer.Option("moai-quickstart", "--output-dir", metavar="DIR",
                                   help="Where every stage writes."),
    tiny: bool = typer.Option(False, "--tiny", metavar="",
                              help="The tiny preset and a few steps (seconds; for tests)."),
    max_steps: int = typer.Option(None, "--max-steps", metavar="N", help="Pretraining steps.",
                                  show_default=str(QuickstartSizes.pretrain_steps)),
    sft_steps: int = typer.Option(None, "--sft-steps", metavar="N", help="SFT steps.",
                                  show_default=str(QuickstartSizes.sft_steps)),
    question: str = typer.Option(None, "--question", metavar="TEXT", show_default="a held-out one",
                                 help="The question to ask at the end."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the report as JSON."),
) -> None:
    """The whole path on this machine, offline: tokenizer → data → pretrain → sft → chat → eval.

    Before it starts it says how long it will take here, from training steps timed on this
    machine: measured on a 2-core CPU, {idle:.1f} minutes idle and {loaded:.0f} shared with other work
    (the time is the training steps, so it depends on the CPU cores free for them)."""
    with handle_errors():
        if as_json:
            set_quiet(True)
        from moai_llm.quickstart import run_quickstart

        report = run_quickstart(output_dir, tiny=tiny, pretrain_steps=max_steps, sft_steps=sft_steps,
                                question=question)
        if as_json:
            print_json(report)
            return
        t = report["timings"]
        out = report["output_dir"]
        pre, sft = report["pretrain_loss"], report["sft_loss"]
        console.rule("[bold green]quickstart done", align="left")
        bpb = report["heldout_bpb"]
        lines = [
            f"total {t['total_s']:.0f} s (tokenizer {t['tokenizer_s']:.0f} s, pretrain "
            f"{t['pretrain_s']:.0f} s, sft {t['sft_s']:.0f} s, chat {t['chat_s']:.0f} s, "
            f"eval {t['eval_s']:.0f} s)",
            f"tokenizer    {report['tokenizer']}",
            f"pretraining  {report['pretrain']}  (loss {pre[0]:.2f} → {pre[1]:.2f}; "
            "final_model/, checkpoints/, metrics.jsonl, loss.png, run.yaml)",
            f"sft          {report['sft']}  (loss {sft[0]:.2f} → {sft[1]:.2f})",
            f"chat model   {report['final_model']}",
            f"held-out text  {bpb[0]:.3f} → {bpb[1]:.3f} bits per byte (before → after pretraining; "
            "lower is better)",
            *_task_lines(report["tasks"]),
            "", "next:",
            f"  moai chat {report['final_model']}",
            f"  tensorboard --logdir {out}/pretrain/tb",
            f"  moai pretrain --model small --tokenizer {report['tokenizer']} --dataset "
            "YOUR_TEXT.jsonl --output-dir runs/mine --max-steps 2000",
            "  moai sft --pretrained-model runs/mine/final_model --dataset YOUR_QA.jsonl "
            "--output-dir runs/mine-sft",
            f"  moai eval {report['pretrain']} {report['sft']} --text {out}/eval_files/heldout_text.jsonl",
            f"  moai export {report['sft']} --format ollama --quant q8_0",
        ]
        for line in lines:  # whole lines: a path broken across lines cannot be copied
            console.print(line, soft_wrap=True, highlight=False, markup=False)


quickstart.__doc__ = quickstart.__doc__.format(idle=MEASURED["idle_2core_s"] / 60,
                                               loaded=MEASURED["loaded_2core_s"] / 60)


def _task_lines(tasks: dict) -> list[str]:
    """The finance multiple-choice rows, base against sft (or why they were skipped)."""
    if "skipped" in tasks:
        return [tasks["skipped"]]
    lines = [f"{'finance multiple choice (held-out)':<44} {'base':>14} {'sft':>14}"]
    lines += [f"  {row[0]:<42} {row[1]:>14} {row[2]:>14}" for row in tasks["rows"]]
    return lines

