"""memory: exact parameter counts, how each choice moves the estimate, and the estimate checked
against the peak memory measured while really training on this CPU.

CPU tolerance: ±25% (allocator and kernels differ from CUDA; observed within ±5% when this
test was written). The GPU comparison (goal ±15%) is benchmarks/bench_memory_gpu.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moai_llm.config import MoaiConfig, list_presets, parameter_count
from moai_llm.hardware.memory import (
    ModelShape,
    activation_bytes_per_token_layer,
    estimate,
    loss_bytes,
)

# The measuring helper is shared with the benchmarks and lives beside them, not in the library.
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from memory_probe import EMPTY_MODEL  # noqa: E402

from saved_tensors import saved_bytes  # noqa: E402

SMALLISH = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, vocab_size=8000, tie_word_embeddings=False,
                max_position_embeddings=1024)


@pytest.mark.parametrize("name", list_presets())
def test_parameter_count_is_exact_for_every_preset(name):
    config = MoaiConfig.from_preset(name)
    assert ModelShape.from_config(config).params == parameter_count(config)


def test_parameter_count_matches_a_real_model():
    import torch

    from moai_llm.modeling import MoaiForCausalLM

    for name in ("tiny", "small"):
        config = MoaiConfig.from_preset(name)
        with torch.device("meta"):
            model = MoaiForCausalLM(config)
        real = sum(p.numel() for p in model.parameters())  # tied weights counted once
        assert ModelShape.from_config(config).params == real


def _saved_bytes_per_token(layer_cfg: dict, precision: str, packed: bool = False, batch: int = 3,
                           seq: int = 50, doc_len: int | None = None) -> float:
    """Bytes autograd keeps for backward of one MoaiDecoderLayer, per token: every saved tensor
    counted once by storage, minus parameters, their bf16 casts, the shared cos/sin and the
    band mask built once per forward. `doc_len`: rows of documents that long (SDPA bands them)."""
    import torch

    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.modeling.attention import AttentionPlan

    torch.manual_seed(0)
    model = MoaiForCausalLM(MoaiConfig(**layer_cfg, num_hidden_layers=1, vocab_size=100))
    pos = torch.arange(seq)[None].expand(batch, seq)
    if packed:  # two documents per row: SDPA gets a block-diagonal mask
        pos = torch.cat([torch.arange(20), torch.arange(seq - 20)])[None].expand(batch, seq)
    if doc_len:
        pos = (torch.arange(seq) % doc_len)[None].expand(batch, seq)
    cos, sin = model.model.rotary_emb(pos, torch.float32)
    shared = {cos.untyped_storage().data_ptr(), sin.untyped_storage().data_ptr()}
    plan = AttentionPlan.build("sdpa", pos, attention_mask=None, q_len=seq, past_len=0,
                               dtype=torch.float32)
    assert (plan.band is not None) == bool(doc_len)
    if plan.band is not None:
        shared.add(plan.band.mask.untyped_storage().data_ptr())
    x = torch.randn(batch, seq, layer_cfg["hidden_size"], requires_grad=True)
    return saved_bytes(lambda: model.model.layers[0](x, cos, sin, plan), model, shared,
                       precision) / (batch * seq)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("heads,kv_heads,inter", [(4, 2, 768), (8, 2, 512)])
def test_activation_formula_matches_saved_tensors_of_one_decoder_layer(precision, heads, kv_heads, inter, packed):
    layer = dict(hidden_size=256, intermediate_size=inter, num_attention_heads=heads,
                 num_key_value_heads=kv_heads, head_dim=64)
    shape = ModelShape.from_config({**layer, "num_hidden_layers": 1, "vocab_size": 100})
    attention = "sdpa-packed" if packed else "sdpa"
    expected = activation_bytes_per_token_layer(shape, precision, attention, seq_len=50)
    measured = _saved_bytes_per_token(layer, precision, packed)
    # exact when written; 10% leaves room for the model code to change without notice
    assert measured == pytest.approx(expected, rel=0.10), (measured, expected)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("doc_len,band", [(10, (16, 32)), (40, (32, 64))])
def test_banded_sdpa_formula_matches_saved_tensors(precision, doc_len, band):
    """Short documents: SDPA over a band of key tiles keeps each tile's key/value window
    (window / tile copies) and a float copy of the band mask instead of the dense mask."""
    from moai_llm.modeling.banded import Band

    layer = dict(hidden_size=256, intermediate_size=768, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64)
    shape = ModelShape.from_config({**layer, "num_hidden_layers": 1, "vocab_size": 100})
    seq = 256
    import torch

    chosen = Band.build((torch.arange(seq) % doc_len == 0)[None])
    assert (chosen.tile, chosen.window) == band
    expected = activation_bytes_per_token_layer(shape, precision, "sdpa-banded", seq, band=band)
    measured = _saved_bytes_per_token(layer, precision, batch=5, seq=seq, doc_len=doc_len)
    assert measured == pytest.approx(expected, rel=0.10), (measured, expected)
    # the plan counts the widest band the data could bring, or the dense mask if larger
    worst = activation_bytes_per_token_layer(shape, precision, "sdpa-banded", seq)
    dense = activation_bytes_per_token_layer(shape, precision, "sdpa-packed", seq)
    assert worst >= max(expected, dense)


def test_the_memory_model_knows_the_band_rules_of_the_model():
    from moai_llm.hardware import memory
    from moai_llm.modeling import banded

    assert memory.BAND_TILES == banded.TILES
    assert memory.BAND_WINDOW_FRACTION == banded.MAX_WINDOW_FRACTION
    assert memory.BAND_MAX_COPY == banded.MAX_COPY


def test_flex_keeps_no_mask_and_no_kv_copies():
    """FlexAttention saves q, k, v, out and logsumexp like SDPA's causal kernel: packed rows
    cost nothing extra, and no seq_len^2 term (the block mask is a few integers per block)."""
    shape = ModelShape.from_config(MoaiConfig.from_preset("2b"))
    for precision in ("bf16", "fp32"):
        flex = activation_bytes_per_token_layer(shape, precision, "flex", seq_len=4096)
        assert flex == activation_bytes_per_token_layer(shape, precision, "sdpa", seq_len=4096)
        assert flex < activation_bytes_per_token_layer(shape, precision, "sdpa-packed", seq_len=4096)
    a1 = estimate(shape, 1024, 4, attention="flex").activations
    assert a1 == estimate(shape, 4096, 1, attention="flex").activations


def test_static_memory_is_16_bytes_per_parameter_and_shards_with_fsdp2():
    cfg = MoaiConfig.from_preset("2b")
    p = ModelShape.from_config(cfg).params
    single = estimate(cfg, 1024, 1, precision="fp32")
    assert single.weights + single.gradients + single.optimizer == 16 * p
    ddp = estimate(cfg, 1024, 1, strategy="ddp", world_size=8)
    assert ddp.distributed == 4 * p  # gradient-sized bucket copies
    fsdp = estimate(cfg, 1024, 1, strategy="fsdp2", world_size=8)
    assert fsdp.weights + fsdp.gradients + fsdp.optimizer == pytest.approx(16 * p / 8, rel=1e-6)
    assert fsdp.peak_allocated < ddp.peak_allocated / 2


def test_checkpointing_bf16_and_chunked_loss_each_reduce_memory():
    cfg = MoaiConfig.from_preset("2b")
    plain = estimate(cfg, 1024, 8, precision="bf16")
    ckpt = estimate(cfg, 1024, 8, precision="bf16", gradient_checkpointing=True)
    assert ckpt.activations < plain.activations / 5
    shape = ModelShape.from_config(cfg)
    assert activation_bytes_per_token_layer(shape, "bf16") < activation_bytes_per_token_layer(shape, "fp32")
    full_kept, full_transient = loss_bytes(shape, 8 * 1024, None)
    fused_kept, fused_transient = loss_bytes(shape, 8 * 1024, 2048)
    assert fused_kept + fused_transient < (full_kept + full_transient) / 4
    # activations grow linearly with tokens and have no seq_len^2 term (SDPA/flash)
    a1 = estimate(cfg, 1024, 4, gradient_checkpointing=False).activations
    a2 = estimate(cfg, 4096, 1, gradient_checkpointing=False).activations
    assert a1 == a2


def test_gpu_estimate_adds_context_and_allocator_reserve():
    cfg = MoaiConfig.from_preset("0.5b")
    gpu = estimate(cfg, 1024, 4, device="cuda", strategy="ddp", world_size=8)
    cpu = estimate(cfg, 1024, 4, device="cpu", strategy="ddp", world_size=8)
    assert gpu.peak_allocated == cpu.peak_allocated
    assert gpu.peak_reserved - gpu.peak_allocated >= 1024**3  # context + NCCL + slack


def _measure(cases: list[dict], tmp_path: Path) -> list[dict]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(BENCHMARKS / "memory_probe.py"), str(path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_estimate_matches_measured_peak_on_cpu(tmp_path):
    """Two optimizer steps x two micro-batches of MoaiForCausalLM with AdamW and the fused loss
    in a forked child per case; peak RSS minus the peak of a near-empty model (the fixed cost
    of running a step: autograd engine, kernel workspaces)."""
    cases = [dict(config=EMPTY_MODEL, seq=16, micro=1, precision="fp32", ckpt=False)] + [
        dict(config=SMALLISH, seq=128, micro=m, precision=p, ckpt=c)
        for m, p, c in [(4, "fp32", False), (4, "fp32", True), (4, "bf16", False)]
    ]
    results = _measure(cases, tmp_path)
    fixed = results[0]["peak_bytes"]
    for r in results[1:]:
        measured = r["peak_bytes"] - fixed
        predicted = estimate(r["config"], r["seq"], r["micro"], precision=r["precision"],
                             gradient_checkpointing=r["ckpt"], device="cpu").peak_allocated
        ratio = predicted / measured
        print(f"{r['precision']} ckpt={r['ckpt']}: predicted {predicted / 2**20:.1f} MiB, "
              f"measured {measured / 2**20:.1f} MiB, ratio {ratio:.3f}")
        assert 0.75 <= ratio <= 1.25, (r["precision"], r["ckpt"], predicted, measured, ratio)
