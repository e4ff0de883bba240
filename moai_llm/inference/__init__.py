"""Chat inference: load a model folder, generate with a KV cache, stream text, hold a session.

    >>> from moai_llm.inference import load_for_chat, ChatSession
    >>> model, tokenizer, info = load_for_chat("outputs/sft")          # doctest: +SKIP
    >>> session = ChatSession(model, tokenizer, info)                  # doctest: +SKIP
"""

from moai_llm.inference.generation import (
    GenerationStats,
    SamplingParams,
    TextStream,
    generate_ids,
    sample_next,
    stream_generate,
)
from moai_llm.inference.loading import load_for_chat, resolve_model_dir
from moai_llm.inference.session import ChatSession

__all__ = [
    "ChatSession",
    "GenerationStats",
    "SamplingParams",
    "TextStream",
    "generate_ids",
    "load_for_chat",
    "resolve_model_dir",
    "sample_next",
    "stream_generate",
]
