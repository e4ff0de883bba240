"""MFU and time accounting: model FLOPs over the real documents of packed rows (by hand), the
peak from the recorded facts only (exact NVML names), and the rates a log window reports."""

from __future__ import annotations

import time

import pytest
import torch

from moai_llm.config import MoaiConfig
from moai_llm.hardware.plan import Plan
from moai_llm.hardware.simulate import peak_flops
from moai_llm.training.worker import metrics
from moai_llm.training.worker.metrics import FlopCounter, LogWindow, attention_pairs, peak_precision


def test_flops_of_packed_documents_computed_by_hand():
    # tiny: hidden 64, 2 layers, 4 query heads x 16, 2 KV heads x 16, intermediate 192, vocab 1024
    # matmul weights per layer: q 64x64 + k, v 2 x 64x32 + o 64x64 + gate, up, down 3 x 64x192
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 192
    assert per_layer == 49_152
    matmul = 2 * per_layer + 1024 * 64  # + the LM head (tied: the lookup is not a matmul)
    # one row of 12: documents of 4, 3 and 2 tokens, then a padding tail of 3 (its own segment)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 1, 2]])
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0]])
    real = ids != 0
    pairs = 4 * 5 // 2 + 3 * 4 // 2 + 2 * 3 // 2  # causal: n(n+1)/2 per document = 10 + 6 + 3
    assert attention_pairs(pos, real) == pairs == 19
    want = 6 * matmul * 9 + 12 * 2 * 64 * 19  # 6N per real token + 12 x layers x q width x pairs
    assert want == 8_876_544
    assert FlopCounter.from_config(MoaiConfig.from_preset("tiny"))(pos, real) == want
    # the same 9 tokens as one document would be charged 45 pairs, not 19; a second row adds its own
    two = torch.cat([pos, torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])])
    assert attention_pairs(two, torch.ones(2, 12, dtype=torch.bool)) == 10 + 6 + 3 + 6 + 78


def test_the_peak_is_the_recorded_facts_by_exact_name():
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.5e12)  # not the SXM's 989
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA GeForce RTX 4090", "bf16") == pytest.approx(165.2e12)
    assert peak_flops("NVIDIA GeForce RTX 4090 D", "bf16") is None  # not the 4090's
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16") is None  # no record (and no bf16 cores)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == pytest.approx(156e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == pytest.approx(19.5e12)
    assert not hasattr(metrics, "PEAK_BF16_FLOPS")  # one table: presets/hardware
    assert metrics.device_peak_flops(Plan(seq_len=8), torch.device("cpu")) is None  # no MFU on CPU


def test_the_peak_follows_the_precision_the_run_computes_in():
    assert peak_precision(Plan(seq_len=8, precision="bf16", tf32=True)) == "bf16"
    assert peak_precision(Plan(seq_len=8, precision="fp32", tf32=True)) == "tf32"
    assert peak_precision(Plan(seq_len=8, precision="fp32")) == "fp32"


def test_a_window_reports_rates_per_device_data_wait_and_mfu():
    w = LogWindow(every=2, max_steps=10, start_step=0, peak=1e12, devices=2)
    w.add(2.0, tokens=1000, flops=3e9, data_s=0.001)
    time.sleep(0.02)
    w.add(2.0, tokens=1000, flops=3e9, data_s=0.001)
    record = w.take(2)
    seconds = 2000 / record["tokens_per_s"]
    assert record["tokens_per_s_per_device"] == pytest.approx(record["tokens_per_s"] / 2, abs=0.1)
    assert record["mfu"] == pytest.approx(6e9 / (seconds * 1e12 * 2), rel=1e-2)
    assert record["data_wait"] == pytest.approx(0.002 / seconds, rel=1e-2)
    assert "mfu" not in LogWindow(1, 10, 0).take(1)  # no recorded peak (the CPU): no MFU


def test_time_outside_steps_is_left_out_of_the_rates():
    w = LogWindow(every=1, max_steps=10, start_step=0)
    w.add(1.0, tokens=100)
    time.sleep(0.05)
    w.exclude(0.05)  # an evaluation or a checkpoint took this long
    assert w.take(1)["tokens_per_s"] > 100 / 0.04
