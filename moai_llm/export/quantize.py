"""llama.cpp's k-quants (q4_k_m, q5_k_m, q6_k) through llama.cpp's own quantizer.

k-quants choose a type per tensor (the "_m" mixes keep some matrices at higher precision), and
that choice is llama.cpp's: moai writes a 16-bit GGUF and hands it to `llama_model_quantize`
from llama-cpp-python, an optional extra (`pip install 'moai[llamacpp]'`). Without it the
request is refused before anything is written, in one line naming the extra.

    >>> sorted(K_QUANTS)
    ['q4_k_m', 'q5_k_m', 'q6_k']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError

# llama.h's llama_ftype values
K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
EXTRA = "llamacpp"


def llama_cpp() -> Any:
    """The llama_cpp module, or MoaiInputError naming the extra that installs it."""
    try:
        import llama_cpp
    except ImportError:
        raise MoaiInputError("--quant k-quants need llama.cpp's quantizer, which is not installed",
                             hint=f"pip install 'moai[{EXTRA}]' (llama-cpp-python; it builds llama.cpp, minutes), "
                                  "or use --quant f16/bf16/q8_0") from None
    return llama_cpp


def require(quant: str) -> None:
    """Refuse a k-quant early (before any work) when the quantizer is missing."""
    if quant in K_QUANTS:
        llama_cpp()


def quantize(source: Path, out: Path, quant: str, threads: int | None = None) -> Path:
    """Quantize the GGUF `source` to `quant` at `out` with llama.cpp."""
    import logging

    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[quant]
    params.nthread = int(threads or os.cpu_count() or 1)
    # llama.cpp logs a line per tensor (through llama-cpp-python's logger): errors only
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        code = lib.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    finally:
        log.setLevel(level)
    if code != 0:
        raise RuntimeError(f"llama.cpp's quantizer failed on {source} (code {code})")
    return out
