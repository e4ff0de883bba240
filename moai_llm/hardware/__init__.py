"""Hardware facts, the memory model and the planner; imports nothing from training.

- `facts`       plain dataclasses of what a machine is (GPUs, P2P matrix, driver, CUDA, host)
- `probe`       this machine's facts through NVML and torch (no GPU/driver is a normal result)
- `simulate`    facts of recorded GPUs and boxes (presets/hardware/*.yaml), "8xA100-80GB"
- `memory`      bytes per process: weights, gradients, AdamW, activations, loss, DDP/FSDP2
- `planner`     `make_plan(facts, model_config, seq_len, global_batch, **choices)` -> `Plan`:
                the one place a run plan is decided, every decision with its reason
- `fit`         does a plan fit: the memory model applied to a plan and a device's memory
- `environment` the plan's environment variables (allocator, threads, NCCL), with reasons
- `plan`        the `Plan` dataclass (saved in run.yaml, which is how it reaches training)
- `checks`      pass / warn / fail checks with a fix each (`moai doctor`)

Launching a plan (torchrun, the worker, first-step OOM retry) is training's: moai_llm/training/launcher/launch.py.
"""
