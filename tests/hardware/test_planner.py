"""planner.make_plan: the seed's GPU table recomputed from facts and the memory model, every decision
with a reason, environment only where the facts call for it, the user's choices winning, and a
CPU plan that really trains.

The seed's table (README of sh2orc/moai-llm, 2B / vocab 92k / seq 1024 unless noted) and
moai's plan for the same hardware and the same global batch:

| hardware      | model           | seed: micro x accum | moai: strategy, micro x accum, ckpt  |
|---------------|-----------------|---------------------|--------------------------------------|
| 8x A40 48GB   | 2B              | 12 x 4  (DDP)       | FSDP2, 8 x 6, no checkpointing       |
| 4x A40 48GB   | 2B              | 12 x 8  (DDP)       | FSDP2, 6 x 16, no checkpointing      |
| 4x RTX 5090   | 2B              | 4 x 24              | FSDP2, 4 x 24, no checkpointing      |
| 4x RTX 4090   | 2B, vocab 64k   | 2 x ?               | FSDP2, 16 x 6, checkpointing         |
| 8x A100 80GB  | seed "3B" (5.1B)| 24 x 4              | FSDP2, 8 x 12, no checkpointing      |

Why moai differs: replicated fp32 weights + gradients + AdamW states + DDP buckets of a 2B
model are 20 bytes x 2.0B = 37.5 GiB, which leaves an A40 (45 GiB) no room for activations, and
the seed's "3B" is really 5.1B (95 GiB replicated > 80 GiB): moai shards them (FSDP2). Where
sharded states leave room for >= 4k tokens per micro batch without recomputation, moai turns
checkpointing off (a third less compute) and takes a smaller micro batch (A40, A100; on the
RTX 5090 that lands on the seed's 4 x 24); on the 24 GiB RTX 4090 it needs checkpointing and
then fits a larger micro batch than the seed. The seed disables P2P on
RTX 4090 because of the GPU's name; moai because NVML reports no P2P between the pairs (a 4090
box whose driver does report P2P keeps it).
"""

from __future__ import annotations

import dataclasses

import pytest

from moai_llm.config import MoaiConfig
from moai_llm.errors import MoaiInputError
from moai_llm.hardware.facts import HardwareFacts
from moai_llm.hardware.planner import default_global_batch, make_plan
from moai_llm.hardware.probe import probe, simulate
from moai_llm.training.launcher.launch import launch

SEED_TABLE = [
    # spec, model preset, overrides, global batch, expected (strategy, micro, accum, ckpt)
    ("8xA40-48GB", "2b", {}, 384, ("fsdp2", 8, 6, False)),
    ("4xA40-48GB", "2b", {}, 384, ("fsdp2", 6, 16, False)),
    ("4xRTX5090-32GB", "2b", {}, 384, ("fsdp2", 4, 24, False)),
    ("4xRTX4090-24GB", "2b", {"vocab_size": 64000}, 384, ("fsdp2", 16, 6, True)),
    ("8xA100-80GB", "seed-3b", {}, 768, ("fsdp2", 8, 12, False)),
]


@pytest.mark.parametrize("spec,model,model_overrides,global_batch,expected", SEED_TABLE)
def test_seed_table_recomputed_from_facts(spec, model, model_overrides, global_batch, expected):
    facts = simulate(spec)
    plan = make_plan(facts, MoaiConfig.from_preset(model, **model_overrides), 1024, global_batch)
    got = (plan.strategy, plan.micro_batch_size, plan.gradient_accumulation_steps,
           plan.gradient_checkpointing)
    assert got == expected
    assert plan.global_batch == global_batch
    assert plan.nproc_per_node == facts.gpu_count and plan.precision == "bf16"
    assert not plan.warnings
    assert plan.predicted_peak_bytes <= 0.92 * plan.device_memory_bytes
    for key in ("strategy", "micro_batch_size", "gradient_accumulation_steps",
                "gradient_checkpointing", "loss_chunk_size", "precision", "global_batch"):
        assert plan.reasons[key], key


def test_ddp_when_replicated_states_fit_and_single_process_on_one_gpu():
    small = MoaiConfig.from_preset("0.5b")
    plan = make_plan(simulate("8xA100-80GB"), small, 1024)
    assert plan.strategy == "ddp" and not plan.gradient_checkpointing
    one = make_plan(simulate("1xH200-141GB"), MoaiConfig.from_preset("2b"), 1024)
    assert one.strategy == "single" and one.world_size == 1
    assert "NCCL_IB_DISABLE" not in one.env  # no collectives at all


def test_default_global_batch_follows_model_size():
    assert default_global_batch(2_000_000_000)[0] in range(256, 513)
    assert default_global_batch(3_000_000_000)[0] == 512
    assert default_global_batch(200_000)[0] < 64


def test_nccl_p2p_disable_comes_from_topology_not_from_the_gpu_name():
    cfg = MoaiConfig.from_preset("0.5b")
    geforce = simulate("4xRTX4090-24GB")
    assert make_plan(geforce, cfg, 1024).env["NCCL_P2P_DISABLE"] == "1"
    patched = dataclasses.replace(geforce, p2p=[["self" if i == j else "pcie" for j in range(4)]
                                                for i in range(4)])
    assert "NCCL_P2P_DISABLE" not in make_plan(patched, cfg, 1024).env
    a40 = make_plan(simulate("8xA40-48GB"), cfg, 1024)  # some pairs lack P2P: NCCL routes them
    assert "NCCL_P2P_DISABLE" not in a40.env and "16 of 28" in a40.reasons["NCCL_P2P_DISABLE"]
    assert "NCCL_P2P_DISABLE" not in make_plan(simulate("8xA100-80GB"), cfg, 1024).env


def test_environment_for_gpus():
    cfg = MoaiConfig.from_preset("0.5b")
    a40 = make_plan(simulate("8xA40-48GB"), cfg, 1024)
    assert a40.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert a40.env["NCCL_IB_DISABLE"] == "1"  # no InfiniBand in that box
    assert int(a40.env["TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"]) > 480
    assert a40.tf32 and a40.backend == "nccl"
    a100 = make_plan(simulate("8xA100-80GB"), cfg, 1024)
    assert "NCCL_IB_DISABLE" not in a100.env  # DGX A100 has InfiniBand
    multi = make_plan(simulate("2x8xA40-48GB"), cfg, 1024)
    assert multi.nnodes == 2 and any("InfiniBand" in w for w in multi.warnings)


def test_user_choices_win_and_unknown_ones_are_rejected():
    cfg = MoaiConfig.from_preset("2b")
    plan = make_plan(simulate("8xA40-48GB"), cfg, 1024, 384, micro_batch_size=2,
                     gradient_checkpointing=True, strategy="fsdp2")
    assert plan.micro_batch_size == 2 and plan.gradient_accumulation_steps == 24
    assert plan.reasons["micro_batch_size"] == "2 (set by you)"
    too_big = make_plan(simulate("8xA40-48GB"), cfg, 1024, micro_batch_size=64)
    assert any("not to fit" in w for w in too_big.warnings)
    with pytest.raises(MoaiInputError, match="--global-batch 384 is not a multiple of micro batch 64"):
        make_plan(simulate("8xA40-48GB"), cfg, 1024, 384, micro_batch_size=64)
    with pytest.raises(MoaiInputError):
        make_plan(simulate("8xA40-48GB"), cfg, 1024, batch=3)


def test_a_model_that_cannot_fit_says_so():
    plan = make_plan(simulate("1xRTX4090-24GB"), MoaiConfig.from_preset("seed-3b"), 4096)
    assert plan.micro_batch_size == 1
    assert any(w.startswith("does not fit") for w in plan.warnings)


def test_first_step_oom_plan_keeps_the_global_batch():
    plan = make_plan(simulate("8xA40-48GB"), MoaiConfig.from_preset("2b"), 1024, 384)
    smaller = plan.halved()
    assert smaller.global_batch == plan.global_batch == 384
    assert smaller.micro_batch_size == plan.micro_batch_size // 2


def test_cpu_plan_uses_gloo_and_all_cores(tmp_path):
    facts = probe(tmp_path)
    if facts.gpus:
        pytest.skip("this machine has GPUs")
    plan = make_plan(facts, MoaiConfig.from_preset("tiny"), 64)
    assert plan.device == "cpu" and plan.backend == "gloo" and plan.precision == "fp32"
    assert plan.env["OMP_NUM_THREADS"] == str(facts.cpu_cores)
    two = make_plan(facts, MoaiConfig.from_preset("tiny"), 64, nproc_per_node=2)
    assert two.strategy == "ddp" and int(two.env["OMP_NUM_THREADS"]) == max(1, facts.cpu_cores // 2)


def test_cpu_plan_really_trains_through_launch(tmp_path):
    """The plan's micro batch x accumulation drives real AdamW steps of MoaiForCausalLM."""
    import torch

    from moai_llm.modeling import MoaiForCausalLM

    cfg = MoaiConfig.from_preset("tiny")
    plan = make_plan(HardwareFacts.from_dict(probe(tmp_path).to_dict() | {"gpus": [], "p2p": []}),
                     cfg, 32, global_batch=8)
    losses = []

    def train(p):
        torch.manual_seed(0)
        model = MoaiForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batch = torch.randint(4, cfg.vocab_size, (p.global_batch, p.seq_len))
        for _ in range(3):
            for k in range(p.gradient_accumulation_steps):
                rows = batch[k * p.micro_batch_size:(k + 1) * p.micro_batch_size]
                out = model(input_ids=rows, labels=rows)
                (out.loss / p.gradient_accumulation_steps).backward()
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
        return 0

    assert launch(plan, [], in_process=train) == 0
    assert plan.global_batch == 8 and len(losses) == 3 and losses[-1] < losses[0]


def test_two_of_batch_size_accumulation_and_global_batch_fix_the_third():
    cfg, facts = MoaiConfig.from_preset("0.5b"), simulate("8xA100-80GB")

    def shape(**kw):
        p = make_plan(facts, cfg, 1024, kw.pop("global_batch", None), **kw)
        return p.micro_batch_size, p.gradient_accumulation_steps, p.global_batch

    assert shape(global_batch=384, micro_batch_size=2) == (2, 24, 384)
    assert shape(global_batch=384, gradient_accumulation_steps=6) == (8, 6, 384)
    assert shape(micro_batch_size=4, gradient_accumulation_steps=3) == (4, 3, 96)
    assert shape(global_batch=384, micro_batch_size=4, gradient_accumulation_steps=12) == (4, 12, 384)
    with pytest.raises(MoaiInputError, match="384 ≠ micro batch 4 × accumulation 4 × 8") as err:
        make_plan(facts, cfg, 1024, 384, micro_batch_size=4, gradient_accumulation_steps=4)
    assert "give two of" in err.value.hint
    with pytest.raises(MoaiInputError, match="not a multiple of 8 processes"):
        make_plan(facts, cfg, 1024, 100)
    with pytest.raises(MoaiInputError, match="accumulation 5"):
        make_plan(facts, cfg, 1024, 384, gradient_accumulation_steps=5)


def test_cpu_trains_in_fp32_unless_bf16_is_asked_for(tmp_path):
    cpu = HardwareFacts.from_dict(probe(tmp_path).to_dict() | {"gpus": [], "p2p": []})
    tiny = MoaiConfig.from_preset("tiny")
    plan = make_plan(cpu, tiny, 64)
    assert plan.precision == "fp32" and "unless you ask for bf16" in plan.reasons["precision"]
    asked = make_plan(cpu, tiny, 64, precision="bf16")
    assert asked.precision == "bf16" and asked.reasons["precision"] == "bf16 (set by you)"
    assert make_plan(cpu, tiny, 64, precision="auto").precision == "fp32"


def test_the_attention_backend_is_one_decision_the_memory_model_follows(tmp_path):
    from moai_llm.hardware.fit import memory_attention
    from moai_llm.hardware.plan import ATTENTION_FLASH, ATTENTION_FLEX, ATTENTION_SDPA

    facts = simulate("8xA100-80GB")
    cfg = MoaiConfig.from_preset("2b")
    plan = make_plan(facts, cfg, 1024)  # CUDA without flash-attn: FlexAttention
    assert plan.attention == ATTENTION_FLEX and memory_attention(plan) == "flex"
    assert "flash-attn is not installed" in plan.reasons["attention"]
    with_flash = make_plan(dataclasses.replace(facts, flash_attn_version="2.7.4"), cfg, 1024)
    assert with_flash.attention == ATTENTION_FLASH and memory_attention(with_flash) == "flash"
    assert "flash-attn 2.7.4" in with_flash.reasons["attention"]
    fp32 = make_plan(dataclasses.replace(facts, flash_attn_version="2.7.4"), cfg, 1024, precision="fp32")
    assert fp32.attention == ATTENTION_FLEX and "needs bf16" in fp32.reasons["attention"]
    cpu = HardwareFacts.from_dict(probe(tmp_path).to_dict() | {"gpus": [], "p2p": []})
    on_cpu = make_plan(cpu, MoaiConfig.from_preset("tiny"), 64)
    assert on_cpu.attention == ATTENTION_SDPA and memory_attention(on_cpu) == "sdpa-banded"
    assert "no backward on the CPU" in on_cpu.reasons["attention"]
    # the estimate counts the backend the model will be built with: flex keeps no T x T mask
    from moai_llm.hardware.memory import ModelShape
    from moai_llm.hardware.planner import estimate_for

    shape = ModelShape.from_config(cfg)
    as_sdpa = dataclasses.replace(with_flash, attention=ATTENTION_SDPA)
    assert estimate_for(shape, with_flash).activations < estimate_for(shape, plan).activations \
        < estimate_for(shape, as_sdpa).activations


def test_nccl_ib_stays_on_for_roce_and_goes_off_without_rdma():
    cfg = MoaiConfig.from_preset("0.5b")
    box = dataclasses.replace(simulate("2x8xA40-48GB"), infiniband=[], rdma={})
    off = make_plan(box, cfg, 1024)
    assert off.env["NCCL_IB_DISABLE"] == "1" and any("InfiniBand" in w for w in off.warnings)
    roce = make_plan(dataclasses.replace(box, rdma={"mlx5_0": "roce"}), cfg, 1024)
    assert "NCCL_IB_DISABLE" not in roce.env and "RoCE" in roce.reasons["NCCL_IB_DISABLE"]
    efa = make_plan(dataclasses.replace(box, rdma={"rdmap0s6": "efa"}), cfg, 1024)
    assert efa.env["NCCL_IB_DISABLE"] == "1" and "aws-ofi-nccl" in efa.reasons["NCCL_IB_DISABLE"]


def test_compiled_blocks_are_one_decision_with_its_reason(tmp_path):
    """On for CUDA; on the CPU only for long runs of long rows, where it was measured to win
    back the compilation (the reason gives the figures); your --compile/--no-compile wins."""
    from moai_llm.hardware.planner import CPU_COMPILE_MIN_SEQ, CPU_COMPILE_MIN_STEPS

    tiny = MoaiConfig.from_preset("tiny")
    gpu = make_plan(simulate("1xH200-141GB"), tiny, 128, max_steps=10)
    assert gpu.compile and gpu.reasons["compile"].startswith("on")
    cpu = HardwareFacts.from_dict(probe(tmp_path).to_dict() | {"gpus": [], "p2p": []})
    seq, steps = CPU_COMPILE_MIN_SEQ, CPU_COMPILE_MIN_STEPS
    assert make_plan(cpu, tiny, seq, max_steps=steps).compile
    assert not make_plan(cpu, tiny, seq, max_steps=steps - 1).compile
    short_rows = make_plan(cpu, tiny, seq // 2, max_steps=10 * steps)
    assert not short_rows.compile and "0.96-1.02x" in short_rows.reasons["compile"]
    assert "benchmarks/results/compile.md" in short_rows.reasons["compile"]
    assert not make_plan(simulate("1xH200-141GB"), tiny, 128, compile=False).compile
    asked = make_plan(cpu, tiny, 64, max_steps=5, compile=True)
    assert asked.compile and asked.reasons["compile"] == "on (set by you)"
