"""`moai quickstart`: tokenizer → data → pretrain → sft → chat on this machine, offline."""

from __future__ import annotations

import typer

from moai_cli.ui import console, handle_errors, print_json, set_quiet


def register(app: typer.Typer) -> None:
    app.command(name="quickstart")(quickstart)


def quickstart(
    output_dir: str = typer.Option("moai-quickstart", "--output-dir", "--output_dir", "-o",
                                   help="Where every stage writes."),
    tiny: bool = typer.Option(False, "--tiny", help="The tiny preset and a few steps (seconds; for tests)."),
    max_steps: int = typer.Option(None, "--max-steps", "--max_steps", help="Pretraining steps (default 500)."),
    sft_steps: int = typer.Option(None, "--sft-steps", help="SFT steps (default 250)."),
    question: str = typer.Option(None, "--question", "-q", help="The question to ask at the end."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """The whole path on this machine: tokenizer → data → pretrain → sft → chat (~70 s on an idle 2-core CPU)."""
    with handle_errors():
        if as_json:
            set_quiet(True)
        from moai_llm.training.quickstart import run_quickstart

        report = run_quickstart(output_dir, tiny=tiny, pretrain_steps=max_steps, sft_steps=sft_steps,
                                question=question)
        if as_json:
            print_json(report)
            return
        t = report["timings"]
        out = report["output_dir"]
        pre, sft = report["pretrain_loss"], report["sft_loss"]
        console.rule("[bold green]quickstart done", align="left")
        console.print(f"total {t['total_s']:.0f} s (tokenizer {t['tokenizer_s']:.0f} s, pretrain "
                      f"{t['pretrain_s']:.0f} s, sft {t['sft_s']:.0f} s, chat {t['chat_s']:.0f} s)")
        console.print(f"tokenizer    {report['tokenizer']}")
        console.print(f"pretraining  {report['pretrain']}  (loss {pre[0]:.2f} → {pre[1]:.2f}; "
                      f"final_model/, checkpoints/, metrics.jsonl, loss.png, run.yaml)")
        console.print(f"sft          {report['sft']}  (loss {sft[0]:.2f} → {sft[1]:.2f})")
        console.print(f"chat model   {report['final_model']}")
        console.print("\n[bold]next:[/]")
        console.print(f"  moai chat {report['final_model']}")
        console.print(f"  tensorboard --logdir {out}/pretrain/tb")
        console.print(f"  moai pretrain --model small --tokenizer {report['tokenizer']} --dataset YOUR_TEXT.jsonl "
                      f"-o runs/mine --max-steps 2000")
        console.print("  moai sft --pretrained-model runs/mine/final_model --dataset YOUR_QA.jsonl -o runs/mine-sft")
