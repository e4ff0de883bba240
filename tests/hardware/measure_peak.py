"""Measure the peak memory of training steps of a Qwen3 model, each case in a fresh process.

    python tests/hardware/measure_peak.py CASES.json   # [{"config": {...}, "seq": 256, "micro": 4,
                                                       #   "precision": "fp32", "ckpt": false}, ...]

Prints one JSON line per case: {"peak_bytes": ..., "baseline_bytes": ...}. torch and the model
code are imported once; every case runs in a forked child, so its peak RSS starts from the
parent's (imports only) and cases do not see each other's memory. Runs two optimizer steps of two
micro-batches each (so gradients and AdamW states exist during the measured forward/backward,
the steady state the memory model predicts), with moai's fused chunked loss on the final hidden
states. CPU: peak RSS (ru_maxrss) minus the RSS before the model is built; run with
MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS and RSS follows allocations.
CUDA: torch.cuda.max_memory_allocated().
"""

from __future__ import annotations

import json
import resource
import sys


def measure(cfg: dict, seq: int, micro: int, precision: str, ckpt: bool, device: str) -> dict:
    import psutil
    import torch

    torch.set_num_threads(1)
    from moai_llm.losses import fused_linear_cross_entropy

    try:
        from moai_llm.config import MoaiConfig
        from moai_llm.modeling import MoaiForCausalLM

        config = MoaiConfig(**cfg)
        model_cls = MoaiForCausalLM
    except Exception:  # MODEL area not there yet: transformers' Qwen3 is the same architecture
        from transformers import Qwen3Config, Qwen3ForCausalLM

        config = Qwen3Config(**cfg)
        model_cls = Qwen3ForCausalLM
    config._attn_implementation = "sdpa"
    baseline = psutil.Process().memory_info().rss
    if device == "cuda":
        torch.cuda.init()
        baseline = 0
    model = model_cls(config).to(device=device, dtype=torch.float32)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    for _step in range(2):
        for _micro in range(2):
            ids = torch.randint(0, config.vocab_size, (micro, seq), generator=gen).to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                hidden = model.model(input_ids=ids).last_hidden_state
                labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], 1)
                loss = fused_linear_cross_entropy(
                    hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, labels.reshape(-1),
                    chunk_size=4096,
                )
            del hidden
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_bytes": peak - baseline, "baseline_bytes": baseline, "model": model_cls.__name__}


def main() -> None:
    import os

    import torch  # imported before forking: the children share it

    try:
        import moai_llm.modeling  # noqa: F401
    except ImportError:
        import transformers  # noqa: F401
    from pathlib import Path

    cases = json.loads(Path(sys.argv[1]).read_text())
    for case in cases:
        device = case.get("device", "cpu")
        args = (case["config"], case["seq"], case["micro"], case["precision"], case["ckpt"], device)
        if device == "cuda":  # CUDA cannot fork after init; max_memory_allocated is reset instead
            torch.cuda.reset_peak_memory_stats()
            print(json.dumps({**case, **measure(*args)}), flush=True)
            torch.cuda.empty_cache()
            continue
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                os.write(write, json.dumps({**case, **measure(*args)}).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            out = f.read()
        os.waitpid(pid, 0)
        print(out, flush=True)


if __name__ == "__main__":
    main()
