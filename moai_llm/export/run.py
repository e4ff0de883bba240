"""`moai export`: one model (folder, run, checkpoint or LoRA adapter) to GGUF or Ollama.

Every check runs before anything is written: the format and quant type (and, for k-quants,
that llama.cpp's quantizer is installed), the output (absent or moai's own export), the model
(Qwen3, safetensors, every tensor there with its shape), the tokenizer's split pattern
(`pretokenizer.recognise`), and for Ollama the chat template's family. Then the GGUF is
written under a temporary name with a progress bar and renamed into place.

    >>> result = export_model("outputs/sft", quant="q8_0")          # doctest: +SKIP
    >>> result.output                                                # doctest: +SKIP
    PosixPath('sft-q8_0.gguf')
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from moai_llm.errors import MoaiInputError
from moai_llm.export import outputs
from moai_llm.export.quantize import K_QUANTS

FORMATS = ("gguf", "ollama")
OLLAMA_CONTEXT = 4096  # Ollama's default num_ctx
QUANT_CHOICES = ("f32", "f16", "bf16", "q8_0", *K_QUANTS)


@dataclass
class ExportResult:
    output: Path  # the GGUF file, or the Ollama folder
    gguf: Path
    format: str
    quant: str
    seconds: float
    bytes: int
    pre: str | None = None  # tokenizer.ggml.pre written
    mismatch: tuple[int, int] | None = None  # (documents tokenized differently, documents measured)
    modelfile: Path | None = None
    ollama_command: str | None = None


def _check_choices(fmt: str, quant: str, adapter_only: bool) -> None:
    if fmt not in FORMATS:
        raise MoaiInputError(f"--format {fmt}: unknown", hint=f"use one of {', '.join(FORMATS)}")
    if quant not in QUANT_CHOICES:
        raise MoaiInputError(f"--quant {quant}: unknown", hint=f"use one of {', '.join(QUANT_CHOICES)}")
    if adapter_only and fmt != "gguf":
        raise MoaiInputError("--adapter-only writes a llama.cpp adapter GGUF; it has no --format ollama form",
                             hint="drop --format ollama (Ollama's ADAPTER line can name the file)")


def _tokenizer(src, allow_mismatch: bool) -> tuple[str, tuple[int, int] | None]:
    """The llama.cpp pre-tokenizer name, and the measured mismatch when it is not exact."""
    from moai_llm.export.pretokenizer import heldout_documents, mismatch, recognise
    from moai_llm.export.tokenizer_meta import tokenizer_spec
    from moai_llm.progress import warn

    spec = tokenizer_spec(src.tokenizer)
    try:
        return recognise(spec).name, None
    except MoaiInputError as exc:
        if not allow_mismatch or (spec.get("model") or {}).get("type") != "BPE":  # no GGUF form to measure
            raise MoaiInputError(f"{src.tokenizer_dir}: {exc}", exc.hint) from None
        pre, differ, total = mismatch(spec, heldout_documents())
        warn(f"{exc}; exporting with llama.cpp's '{pre.name}' pre-tokenizer: {differ} of {total} held-out "
             f"ko/en/ja/zh documents ({100 * differ / max(total, 1):.1f}%) tokenize differently in llama.cpp")
        return pre.name, (differ, total)


def _write_model(src, meta, out: Path, quant: str, name: str, final: Path) -> None:
    """The model GGUF at `out` (temporary); k-quants go through a 16-bit GGUF beside `final`."""
    import torch

    from moai_llm.export.gguf_writer import write_gguf
    from moai_llm.export.quantize import quantize
    from moai_llm.progress import progress_bar

    total = sum(int(torch.Size(s).numel()) for s in src.shapes.values())
    base = quant
    if quant in K_QUANTS:
        stored = getattr(src.config, "dtype", None) or getattr(src.config, "torch_dtype", None)
        base = "bf16" if "bfloat16" in str(stored) else "f16"
    first = out if base == quant else outputs.temp_beside(final)
    try:
        with progress_bar(unit="param") as bar:
            task = bar.add_task(f"writing GGUF ({base})", total=total, info="")
            write_gguf(first, src.config, src.shapes, src.tensors, meta, base, name,
                       advance=lambda n: bar.advance(task, n), extra={outputs.MOAI_KEY: "model"})
        if first != out:
            from moai_llm.progress import info

            info(f"quantizing to {quant} with llama.cpp")
            quantize(first, out, quant)
            _mark_moai(out)
    finally:
        if first != out:
            first.unlink(missing_ok=True)


# bytes per parameter of each type (k-quants: the 16-bit GGUF written first dominates)
_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, **dict.fromkeys(K_QUANTS, 2.0 + 0.7)}


def _check_disk(src, out: Path, quant: str) -> None:
    """Refuse before writing when the GGUF will not fit where it goes."""
    import math

    from moai_llm.resources import check_disk

    params = sum(math.prod(s) for s in src.shapes.values())
    check_disk(out, int(params * _BYTES[quant]) + (1 << 20), "the GGUF")


def _mark_moai(path: Path) -> None:
    """llama.cpp's quantizer copies every header key, moai's included; check that it did."""
    if not outputs.is_moai_gguf(path):
        raise RuntimeError(f"{path}: llama.cpp's quantizer dropped the {outputs.MOAI_KEY} key")


def _ollama(src, gguf_file: Path, family: str, meta) -> str:
    from moai_llm.export.modelfile import modelfile, sampling
    from moai_llm.export.tokenizer_meta import read_generation_config

    params = sampling(read_generation_config(src.model_dir))
    context = int(getattr(src.config, "max_position_embeddings", 0) or 0)
    if 0 < context < OLLAMA_CONTEXT:  # Ollama's default window would run past what the model saw
        params["num_ctx"] = context
    return modelfile(gguf_file.name, family, meta.end_tokens, params)


def export_model(model: str | Path, output: str | Path | None = None, fmt: str = "gguf", quant: str = "f16",
                 adapter_only: bool = False, allow_tokenizer_mismatch: bool = False,
                 tokenizer_path: str | Path | None = None, trust_remote_code: bool = False) -> ExportResult:
    """Export `model` (see the module docstring); returns what was written."""
    from moai_llm.atomic import building, remove_leftovers
    from moai_llm.export.quantize import require
    from moai_llm.locks import RunLock
    from moai_llm.ownership import write_marker

    _check_choices(fmt, quant, adapter_only)
    require(quant)
    out = Path(output).expanduser() if output else outputs.default_output(model, fmt, quant, adapter_only)
    outputs.check_output(out, fmt, model)
    start = time.perf_counter()
    if adapter_only:
        return _export_adapter(model, out, quant, start)
    from moai_llm.export.source import open_source
    from moai_llm.export.tokenizer_meta import (
        read_generation_config,
        tokenizer_meta,
        tokenizer_spec,
    )

    src = open_source(model, tokenizer_path, trust_remote_code)
    pre, measured = _tokenizer(src, allow_tokenizer_mismatch)
    meta = tokenizer_meta(src.tokenizer, tokenizer_spec(src.tokenizer), pre, int(src.config.vocab_size),
                          read_generation_config(src.model_dir), getattr(src.config, "bos_token_id", None))
    family = None
    if fmt == "ollama":
        from moai_llm.export.modelfile import template_family

        family = template_family(src.tokenizer)
    name = Path(str(model).rstrip("/")).name or src.model_dir.name
    _check_disk(src, out, quant)
    with RunLock(out, command="moai export"):
        remove_leftovers(out)
        if fmt == "gguf":
            tmp = outputs.temp_beside(out)
            try:
                _write_model(src, meta, tmp, quant, name, out)
                outputs.publish_file(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
            gguf_file, modelfile_path, command = out, None, None
        else:
            gguf_name = f"{name}-{quant}.gguf"
            with building(out) as folder:
                _write_model(src, meta, folder / gguf_name, quant, name, folder / gguf_name)
                (folder / "Modelfile").write_text(_ollama(src, folder / gguf_name, family, meta), encoding="utf-8")
                write_marker(folder, "export", "moai export", record_files=True)
            gguf_file, modelfile_path = out / gguf_name, out / "Modelfile"
            command = f"ollama create {ollama_name(name)} -f {modelfile_path}"
    return ExportResult(out, gguf_file, fmt, quant, time.perf_counter() - start, gguf_file.stat().st_size, pre,
                        measured, modelfile_path, command)


def ollama_name(name: str) -> str:
    """`name` as Ollama accepts a model name (lower case letters, digits, '.', '_', '-').

    >>> ollama_name("My Model (v2)")
    'my-model-v2'
    """
    import re

    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "moai-model"


def _export_adapter(model: str | Path, out: Path, quant: str, start: float) -> ExportResult:
    from moai_llm.atomic import remove_leftovers
    from moai_llm.export.adapter import write_adapter_gguf
    from moai_llm.inference.loading import resolve_model_dir

    folder, kind = resolve_model_dir(model)
    if kind not in ("adapter", "final_adapter"):
        raise MoaiInputError(f"--adapter-only: {folder} is a full model, not a LoRA adapter folder",
                             hint="pass the adapter folder (adapter_config.json), or drop --adapter-only")
    from moai_llm.locks import RunLock

    config = adapter_base_config(folder)
    with RunLock(out, command="moai export"):
        remove_leftovers(out)
        tmp = outputs.temp_beside(out)
        try:
            write_adapter_gguf(folder, tmp, config, quant)
            outputs.publish_file(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return ExportResult(out, out, "gguf", quant, time.perf_counter() - start, out.stat().st_size)


def adapter_base_config(folder: Path):
    """The config of the adapter's base model (Qwen3 only)."""
    from transformers import AutoConfig

    from moai_llm.adapters import base_model_of
    from moai_llm.export.source import check_qwen3
    from moai_llm.pretrained import resolve_pretrained

    base, _ = base_model_of(folder)
    config = AutoConfig.from_pretrained(resolve_pretrained(base).path)
    check_qwen3(config, folder)
    return config

