"""Export a trained model to GGUF (llama.cpp, LM Studio) and Ollama: `moai export`.

One file per concept: `source` (MODEL resolved and checked whole), `pretokenizer` (which
llama.cpp pre-tokenizer reproduces the tokenizer), `tokenizer_meta` (vocabulary, merges,
special ids, template as GGUF keys), `gguf_writer` (the model through the `gguf` package),
`quantize` (llama.cpp's k-quants), `adapter` (LoRA adapters as llama.cpp adapters),
`modelfile` (Ollama), `outputs` (where files go, what may be replaced), `run` (the command).

    >>> from moai_llm.export import export_model
    >>> export_model("outputs/sft", quant="q8_0").output             # doctest: +SKIP
    PosixPath('sft-q8_0.gguf')
"""

from __future__ import annotations

from typing import Any


def export_model(*args: Any, **kwargs: Any) -> Any:
    """`moai_llm.export.run.export_model` (imported on use: the gguf package loads numpy)."""
    from moai_llm.export.run import export_model as run

    return run(*args, **kwargs)


__all__ = ["export_model"]
