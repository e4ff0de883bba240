"""Token-by-token generation for chat: sampling, a KV-cached decode loop, clean text streaming.

- `SamplingParams` + `sample_next`: temperature, top-k, top-p, repetition penalty (the same
  rules as transformers' logits processors, which the tests check), greedy at temperature 0,
  reproducible with a seed.
- `TextStream`: turns token ids into text increments. Byte-level tokens can end in the middle
  of a UTF-8 character (Korean syllables are 3 bytes, emoji 4); the stream only emits text once
  it decodes without a replacement character, so every increment is complete text.
- `stream_generate`: prefill once, then one token per step through the model's KV cache
  (`use_cache=False` recomputes the whole sequence each step, for the equality test). It stops
  at any stop id (<|im_end|>, <|endoftext|>, eos), never emits special tokens, and fills a
  `GenerationStats` (tokens, time to first token, decode tokens/s) as it goes.

    A tiny random model and tokenizer (its answers are nonsense, the loop is the real one):

    >>> import pathlib, tempfile, torch
    >>> from transformers import AutoTokenizer
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.modeling import MoaiForCausalLM
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.inference.generation import GenerationStats, SamplingParams, stream_generate
    >>> texts = ["hello world", "안녕하세요 세계", "a small example"] * 20
    >>> tokenizer = AutoTokenizer.from_pretrained(
    ...     train_tokenizer(texts, pathlib.Path(tempfile.mkdtemp()), vocab_size=300))
    >>> _ = torch.manual_seed(0)
    >>> model = MoaiForCausalLM(MoaiConfig.from_preset("tiny", vocab_size=len(tokenizer))).eval()
    >>> ids = tokenizer("hello")["input_ids"]
    >>> stats, answer = GenerationStats(), ""
    >>> params = SamplingParams(temperature=0, max_new_tokens=8)   # greedy
    >>> for text in stream_generate(model, tokenizer, ids, params,
    ...                             stop_ids=[tokenizer.eos_token_id], stats=stats):
    ...     answer += text            # a chat UI prints each piece: print(text, end="", flush=True)
    >>> "\ufffd" in answer               # every piece is complete text
    False
    >>> stats.tokens <= 8, stats.stop_reason in ("stop_token", "max_new_tokens")
    (True, True)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from moai_llm.defaults import SAMPLING


@dataclass
class SamplingParams:
    temperature: float = SAMPLING["temperature"]  # 0 = greedy
    top_p: float = SAMPLING["top_p"]              # nucleus: keep the smallest set with this much probability
    top_k: int = 50                               # 0 = off
    repetition_penalty: float = SAMPLING["repetition_penalty"]  # 1 = off; >1: tokens already in the context less likely
    max_new_tokens: int = SAMPLING["max_new_tokens"]
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    tokens: int = 0                   # generated, including the stop token
    ttft_s: float = 0.0               # start of the call to the first generated token
    total_s: float = 0.0
    stop_reason: str = ""             # "stop_token" | "max_new_tokens" | "context" | "interrupted"

    @property
    def tokens_per_s(self) -> float:
        """Decode rate: tokens after the first over the time after the first (prefill excluded)."""
        decode_s = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode_s if self.tokens > 1 and decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "tokens": self.tokens,
                "tokens_per_s": round(self.tokens_per_s, 2), "ttft_s": round(self.ttft_s, 4),
                "total_s": round(self.total_s, 4), "stop_reason": self.stop_reason}

    def line(self) -> str:
        """`42 tokens · 35.1 tok/s · TTFT 0.08 s` (the dim line after each answer)."""
        return f"{self.tokens} tokens · {self.tokens_per_s:.1f} tok/s · TTFT {self.ttft_s:.2f} s"


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on every token in `seen`: positive logits divided, negative multiplied."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    scores = logits.gather(-1, seen)
    logits = logits.scatter(-1, seen, torch.where(scores < 0, scores * penalty, scores / penalty))
    return logits


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set every logit outside the top-k and outside the top-p nucleus to -inf (1-D logits)."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= 1 - top_p
        drop_sorted[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, seen: torch.Tensor, params: SamplingParams,
    generator: torch.Generator | None = None,
) -> int:
    """The next token id from 1-D `logits` (vocab,), given the ids already in the context."""
    logits = apply_repetition_penalty(logits.float(), seen, params.repetition_penalty)
    if params.temperature <= 0:
        return int(logits.argmax())
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TextStream:
    """Incremental detokenizer: `push(token_id)` returns the newly completed text (maybe "").

    Decodes a short window of recent tokens rather than the whole answer, so each step costs
    the same however long the answer is (the window restarts after each emitted piece).
    """

    def __init__(self, tokenizer: Any, skip_ids: Sequence[int] = ()):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust decoder directly: no Python wrapper work per token
            self._decode = lambda ids: backend.decode(ids, skip_special_tokens=True)
        else:
            self._decode = lambda ids: tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        self._skip = set(skip_ids) | set(getattr(tokenizer, "all_special_ids", []) or [])
        self.ids: list[int] = []
        self._prefix = 0   # window start: tokens before it are already fully emitted
        self._read = 0     # tokens up to here are emitted
        self.text = ""

    def push(self, token_id: int) -> str:
        if token_id in self._skip:
            return ""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full_text = self._decode(self.ids[self._prefix:])
        if full_text.endswith("\ufffd") or len(full_text) <= len(prefix_text):
            return ""  # an unfinished UTF-8 character, or nothing visible yet
        piece = full_text[len(prefix_text):]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += piece
        return piece

    def flush(self) -> str:
        """Whatever is still held back at the end. An unfinished UTF-8 character (the answer was
        cut by the token limit mid-character) is dropped rather than shown as U+FFFD."""
        full_text = self._decode(self.ids[self._prefix:])
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        piece = full_text[len(prefix_text):].rstrip("\ufffd")
        self._prefix = self._read = len(self.ids)
        self.text += piece
        return piece


def _cache_kwarg(model: Any) -> str:
    """transformers ≥ 5.x names the cache argument `cache`; moai and older models
    `past_key_values`. Pick the one this model's forward takes (no deprecation warnings)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@torch.inference_mode()
def generate_ids(
    model: Any, input_ids: Sequence[int], params: SamplingParams, stop_ids: Sequence[int] = (),
    use_cache: bool = True, stats: GenerationStats | None = None,
    max_length: int | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one (the stop token last, when one is produced)."""
    stats = stats if stats is not None else GenerationStats()
    start = time.perf_counter()
    device = next(model.parameters()).device
    context = torch.tensor([list(input_ids)], dtype=torch.long, device=device)
    stats.prompt_tokens = context.shape[1]
    stops = set(stop_ids)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    seen = context[0].unique() if params.repetition_penalty != 1.0 else context[0, :0]
    budget = params.max_new_tokens
    if max_length:
        budget = min(budget, max(0, max_length - stats.prompt_tokens))
    cache_kw = _cache_kwarg(model)
    cache = _new_cache(model) if use_cache else None
    step_input = context
    stats.stop_reason = "max_new_tokens" if budget == params.max_new_tokens else "context"
    try:
        for step in range(budget):
            if use_cache:
                out = model(step_input, **{cache_kw: cache}, use_cache=True, logits_to_keep=1)
            else:
                out = model(context, use_cache=False, logits_to_keep=1)
            token = sample_next(out.logits[0, -1], seen, params, generator)
            now = time.perf_counter()
            if step == 0:
                stats.ttft_s = now - start
            stats.tokens += 1
            stats.total_s = now - start
            if token in stops:
                stats.stop_reason = "stop_token"
                yield token
                return
            yield token
            step_input = torch.tensor([[token]], dtype=torch.long, device=device)
            if not use_cache:
                context = torch.cat([context, step_input], dim=1)
            if params.repetition_penalty != 1.0:
                seen = torch.cat([seen, step_input[0]])
    except GeneratorExit:  # the consumer stopped early (Ctrl-C): keep the stats honest
        stats.stop_reason = "interrupted"
        raise
    finally:
        stats.total_s = time.perf_counter() - start


def stream_generate(
    model: Any, tokenizer: Any, input_ids: Sequence[int], params: SamplingParams,
    stop_ids: Sequence[int] = (), use_cache: bool = True, stats: GenerationStats | None = None,
    max_length: int | None = None,
) -> Iterator[str]:
    """Yield the answer as complete-text increments; special tokens never appear."""
    stream = TextStream(tokenizer, skip_ids=stop_ids)
    for token in generate_ids(model, input_ids, params, stop_ids, use_cache, stats, max_length):
        piece = stream.push(token)
        if piece:
            yield piece
    tail = stream.flush()
    if tail:
        yield tail
