"""Measure the peak memory of real training steps, to check the memory model
(moai_llm/hardware/memory.py). A measuring helper for tests/hardware/test_memory.py and
benchmarks/bench_memory_gpu.py, not part of the library.

    >>> from memory_probe import EMPTY_MODEL, measure, run_cases   # benchmarks/ on sys.path
    >>> measure(EMPTY_MODEL, seq=16, micro=1)   # doctest: +ELLIPSIS
    {'peak_bytes': ..., 'reserved_bytes': ..., 'baseline_bytes': ...}

`measure` runs in this process (above: a near-empty model, fast). `run_cases` forks one child
process per CPU case (seconds each); the call and its result look like:

    >>> run_cases([{"config": "tiny", "seq": 128, "micro": 4, "precision": "fp32",
    ...             "ckpt": False}])   # doctest: +SKIP
    [{'config': 'tiny', 'seq': 128, 'micro': 4, ..., 'peak_bytes': ..., 'reserved_bytes': ..., ...}]

From a shell: `python benchmarks/memory_probe.py CASES.json` (one JSON line per case).

A case trains MoaiForCausalLM (fp32 master weights, autocast when bf16, fused AdamW, the
model's own fused chunked loss via `labels=`) for two optimizer steps of two micro-batches: the
steady state the memory model predicts (gradients and AdamW states exist during the second
step's forward/backward).

- CUDA: torch.cuda.max_memory_allocated() (reset per case), cases in this process.
- CPU: torch has no CPU peak counter, so each case runs in a forked child and reports its peak
  RSS (ru_maxrss) minus the RSS before the model existed. Run with
  MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS and RSS follows allocations;
  the fixed cost of a step (autograd engine, kernel workspaces) is measured with a near-empty
  model and subtracted by the caller.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

EMPTY_MODEL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, vocab_size=128, max_position_embeddings=1024)


def _config(spec: dict[str, Any] | str, chunk: int, attention: str | None = None):
    from moai_llm.config import MoaiConfig

    extra = {"attn_implementation": attention} if attention else {}
    config = MoaiConfig.from_preset(spec, **extra) if isinstance(spec, str) else MoaiConfig(**spec, **extra)
    config.loss_chunk_size = chunk
    config.use_cache = False
    return config


def measure(config_spec: dict[str, Any] | str, seq: int, micro: int, precision: str = "fp32",
            ckpt: bool = False, device: str = "cpu", chunk: int = 4096,
            packed: bool = False, attention: str | None = None) -> dict[str, Any]:
    """Peak bytes of training steps in THIS process (see module docstring). `packed`: two
    documents per row (position_ids restart mid-row), as in packed pretraining data.
    `attention`: the model's attn_implementation (default: "auto", the best for the device)."""
    import psutil
    import torch

    from moai_llm.modeling import MoaiForCausalLM

    config = _config(config_spec, chunk, attention)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = psutil.Process().memory_info().rss
    model = MoaiForCausalLM(config).to(device=device, dtype=torch.float32)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    pos = None
    if packed:
        half = seq // 2
        pos = torch.cat([torch.arange(half), torch.arange(seq - half)])[None].expand(micro, seq)
        pos = pos.to(device)
    for _step in range(2):
        for _micro in range(2):
            ids = torch.randint(4, config.vocab_size, (micro, seq), generator=gen).to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, labels=ids, position_ids=pos).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
        del model, opt, loss
        torch.cuda.empty_cache()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reserved = peak
    return {"peak_bytes": peak - baseline, "reserved_bytes": reserved, "baseline_bytes": baseline}


def _in_child(args: tuple) -> dict[str, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, leave without running the parent's cleanup
        os.close(read)
        try:
            os.write(write, json.dumps(measure(*args)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    if not out:
        raise RuntimeError(f"measuring {args[1:]} failed in the child process")
    return json.loads(out)


def run_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Measure each case ({"config", "seq", "micro", "precision", "ckpt", "device", "chunk"})."""
    import torch

    import moai_llm.modeling  # noqa: F401  (imported once, before forking)

    torch.set_num_threads(1)
    out = []
    for case in cases:
        args = (case["config"], case["seq"], case["micro"], case.get("precision", "fp32"),
                case.get("ckpt", False), case.get("device", "cpu"), case.get("chunk", 4096),
                case.get("packed", False), case.get("attention"))
        result = measure(*args) if args[5] == "cuda" else _in_child(args)
        out.append({**case, **result})
    return out


if __name__ == "__main__":
    for row in run_cases(json.loads(Path(sys.argv[1]).read_text())):
        print(json.dumps(row), flush=True)
