"""Hardware facts, memory model, run plans and launch.

- `facts`    plain dataclasses of what a machine is (GPUs, P2P matrix, driver, CUDA, host)
- `probe`    this machine's facts through NVML and torch (no GPU/driver is a normal result)
- `simulate` facts of recorded GPUs and boxes (presets/hardware/*.yaml), "8xA100-80GB"
- `memory`   bytes per process: weights, gradients, AdamW, activations, loss, DDP/FSDP2
- `presets`  `make_plan(facts, model_config, seq_len, global_batch)` -> `Plan`, with reasons
- `plan`     the `Plan` dataclass (also saved in run.yaml and passed to workers)
- `checks`   pass / warn / fail checks with a fix each (`moai doctor`)
- `launch`   run a plan in-process or under torchrun; first-step OOM retry
"""
