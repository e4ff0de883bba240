"""The memory model of QLoRA (hardware/quantized.py): a 4-bit NF4 base with double quantisation
costs 4.127 bits a decoder weight, the rest is held in the compute dtype, and the planner sizes
such a run: qwen3-8b with rank-16 adapters fits one RTX 4090 with a 4-bit base, not without."""

from __future__ import annotations

import pytest

from moai_llm.config import MoaiConfig
from moai_llm.hardware.memory import ModelShape, estimate
from moai_llm.hardware.planner import make_plan
from moai_llm.hardware.probe import simulate
from moai_llm.hardware.quantized import nf4_bytes, qlora_frozen_bytes
from moai_llm.training.lora import lora_memory_facts


def test_nf4_costs_what_the_qlora_paper_says():
    n = 64 * 256 * 1000
    assert nf4_bytes(n) * 8 / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert nf4_bytes(n, double_quant=False) * 8 / n == pytest.approx(4.5)


def test_a_4bit_base_holds_its_decoder_linears_in_nf4_and_the_rest_in_the_compute_dtype():
    config = MoaiConfig.from_preset("qwen3-8b")
    shape = ModelShape.from_config(config)
    facts = lora_memory_facts(config, 16)
    bf16 = estimate(config, 2048, 1, precision="bf16", gradient_checkpointing=True,
                    lora={**facts, "frozen_dtype": "bf16"})
    nf4 = estimate(config, 2048, 1, precision="bf16", gradient_checkpointing=True,
                   lora={**facts, "frozen_dtype": "nf4"})
    linears = shape.layers * (shape.matmul_params - shape.embed_params) // shape.layers
    rest = facts["frozen"] - linears
    assert nf4.weights == nf4_bytes(linears) + 2 * rest + 4 * facts["trainable"]
    assert nf4.weights < 0.45 * bf16.weights
    assert nf4.gradients == bf16.gradients and nf4.optimizer == bf16.optimizer  # adapters only
    held, transient = qlora_frozen_bytes(shape, facts["frozen"], bf16=True)
    assert transient == 2 * shape.hidden * shape.intermediate  # one dequantized MLP projection


def _plan(base_4bit: bool):
    config = MoaiConfig.from_preset("qwen3-8b")
    lora = {**lora_memory_facts(config, 16), "dropout": 0.0, "base_4bit": base_4bit}
    return make_plan(simulate("1xRTX4090-24GB"), config, 2048, lora=lora)


def test_qwen3_8b_qlora_rank_16_fits_one_rtx4090_and_plain_lora_does_not():
    qlora, lora = _plan(True), _plan(False)
    assert qlora.lora["frozen_dtype"] == "nf4" and "4-bit NF4" in qlora.reasons["lora"]
    assert qlora.predicted_peak_bytes <= qlora.device_memory_bytes
    assert not any("does not fit" in w for w in qlora.warnings)
    assert lora.predicted_peak_bytes > lora.device_memory_bytes  # bf16 layers + fp32 embeddings: 24.3 GiB
    assert any("does not fit" in w for w in lora.warnings)


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_bytes_are_what_bitsandbytes_stores(double_quant):
    """Codes plus block scales of a real Linear4bit quantized on the CPU (needs moai[qlora])."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    weight = torch.nn.Linear(1024, 3072, bias=False).weight.data
    param = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=double_quant, quant_type="nf4")
    param = param._quantize("cpu")  # what .to(device) does for a Linear4bit's weight
    state = param.quant_state
    stored = param.numel() * param.element_size() + state.absmax.numel() * state.absmax.element_size()
    if state.nested:
        stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    assert stored == nf4_bytes(1024 * 3072, double_quant)
