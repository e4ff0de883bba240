"""`moai export`: a trained model as a GGUF for llama.cpp / LM Studio, or a folder for Ollama.

    moai export outputs/sft                              # sft-f16.gguf
    moai export outputs/sft --quant q8_0 -o sft.gguf
    moai export outputs/sft --format ollama              # sft-ollama/ (GGUF + Modelfile)
    moai export outputs/lora --adapter-only              # a llama.cpp LoRA adapter GGUF

The work happens in `moai_llm.export`; this module parses flags and prints what was written.
"""

from __future__ import annotations

from typing import Optional

import typer

from moai_cli.ui import MoaiCommand, console, handle_errors, print_json, set_quiet


def register(app: typer.Typer) -> None:
    app.command(name="export", cls=MoaiCommand)(export)


def export(
    model: str = typer.Argument(..., help="Model folder, run folder, checkpoint or LoRA adapter folder."),
    fmt: str = typer.Option("gguf", "--format", help="gguf (one file) or ollama (a folder: GGUF + Modelfile)."),
    quant: str = typer.Option("f16", "--quant", help="f32, f16, bf16, q8_0; q4_k_m, q5_k_m, q6_k need the llamacpp extra."),
    output: Optional[str] = typer.Option(None, "--output", show_default="NAME-QUANT.gguf or NAME-ollama/ here", help="File (gguf) or folder (ollama)."),
    adapter_only: bool = typer.Option(False, "--adapter-only", help="A LoRA adapter folder as a llama.cpp adapter GGUF (not merged)."),
    allow_mismatch: bool = typer.Option(False, "--allow-tokenizer-mismatch", help="Export a tokenizer llama.cpp cannot reproduce exactly; prints how much text tokenizes differently."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder when the model folder has none."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the model to run (off by default)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Export a model to GGUF (llama.cpp, LM Studio) or Ollama, tokenizing and stopping as in training."""
    with handle_errors():
        if json_out:
            set_quiet(True)
        from moai_llm.export.run import export_model

        result = export_model(model, output, fmt=fmt, quant=quant, adapter_only=adapter_only,
                              allow_tokenizer_mismatch=allow_mismatch, tokenizer_path=tokenizer,
                              trust_remote_code=trust_remote_code)
        if json_out:
            print_json({"output": str(result.output), "gguf": str(result.gguf), "format": result.format,
                        "quant": result.quant, "bytes": result.bytes, "seconds": round(result.seconds, 2),
                        "tokenizer_pre": result.pre, "mismatch": result.mismatch,
                        "modelfile": str(result.modelfile) if result.modelfile else None,
                        "ollama_create": result.ollama_command})
            return
        size = result.bytes / 2**20
        console.print(f"wrote {result.gguf} ({size:,.1f} MiB, {result.quant}) in {result.seconds:.1f}s")
        if result.modelfile is not None:
            console.print(f"wrote {result.modelfile}")
            console.print(f"next: {result.ollama_command}")
        elif result.pre is None:
            console.print(f"next: llama-cli -m BASE.gguf --lora {result.gguf}")
        else:
            console.print(f"next: llama-cli -m {result.gguf} -cnv")
