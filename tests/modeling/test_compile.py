"""compile_blocks: regional compilation of the decoder blocks trains like the uncompiled model
(packed rows, non-reentrant gradient checkpointing), compiles once and not again over 20 steps
of a fixed row length, keeps stock Qwen3 parameter names, and leaves decoding uncompiled."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch._inductor.compile_fx import compile_fx
from transformers import AutoModelForCausalLM

from moai_llm.modeling import MoaiForCausalLM, compile_blocks

from tiny_models import tiny_config

T = 32


class CountingInductor:
    """torch.compile backend that counts graph compilations, then compiles with inductor."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return compile_fx(graph_module, example_inputs)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # compiled code of other tests' shapes must not count here
    yield
    torch._dynamo.reset()


def _twins(**overrides) -> tuple[MoaiForCausalLM, MoaiForCausalLM]:
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(MoaiForCausalLM(tiny_config(num_hidden_layers=3, **overrides)).train())
    return models[0], models[1]


def _packed_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of T tokens; the document layout changes every step, the shape never does."""
    gen = torch.Generator().manual_seed(step)
    cuts = sorted((torch.randperm(T - 1, generator=gen)[:3] + 1).tolist())
    lengths = [b - a for a, b in zip([0, *cuts], [*cuts, T], strict=True)]
    positions = torch.cat([torch.arange(n) for n in lengths])[None].expand(2, -1)
    return torch.randint(0, 128, (2, T), generator=gen), positions


def _train(model: MoaiForCausalLM, steps: range, optimizer: torch.optim.Optimizer) -> list[float]:
    losses = []
    for step in steps:
        x, positions = _packed_batch(step)
        loss = model(x, position_ids=positions, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.slow  # ~40 s with a cold inductor cache (C++ kernels for forward and backward)
def test_compiled_blocks_train_like_eager_and_compile_once_in_20_steps():
    compiled, eager = _twins()
    for model in (compiled, eager):
        model.gradient_checkpointing_enable()  # non-reentrant
    keys = list(compiled.state_dict())
    counter = CountingInductor()
    assert compile_blocks(compiled, backend=counter) == 3
    opt_c = torch.optim.AdamW(compiled.parameters(), lr=1e-2)
    opt_e = torch.optim.AdamW(eager.parameters(), lr=1e-2)

    first = _train(compiled, range(2), opt_c)
    compiles_after_first_steps = counter.graphs
    rest = _train(compiled, range(2, 20), opt_c)
    expected = _train(eager, range(20), opt_e)

    assert compiles_after_first_steps == 1  # one block graph, shared by the three layers
    assert counter.graphs == compiles_after_first_steps  # nothing recompiled in 18 more steps
    assert expected[-1] < expected[0]  # it trained
    torch.testing.assert_close(torch.tensor(first + rest), torch.tensor(expected),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    assert list(compiled.state_dict()) == keys  # no `_orig_mod.` in any name


def test_compiled_model_saves_stock_qwen3_and_resumes_exactly(tmp_path):
    compiled, twin = _twins()
    compile_blocks(compiled, backend="aot_eager")
    opt = torch.optim.AdamW(compiled.parameters(), lr=1e-2)
    _train(compiled, range(3), opt)

    compiled.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    x, _ = _packed_batch(99)
    with torch.no_grad():
        assert (compiled.eval()(x).logits - stock(x).logits).abs().max().item() <= 1e-4
    compiled.train()

    # Resume: the compiled model's state dict loads strictly into a fresh compiled model.
    state = copy.deepcopy({"model": compiled.state_dict(), "optimizer": opt.state_dict()})
    compile_blocks(twin, backend="aot_eager")
    twin.load_state_dict(state["model"], strict=True)
    opt_twin = torch.optim.AdamW(twin.parameters(), lr=1e-2)
    opt_twin.load_state_dict(state["optimizer"])
    assert _train(twin, range(3, 6), opt_twin) == _train(compiled, range(3, 6), opt)


def test_decoding_with_a_cache_runs_uncompiled():
    compiled, eager = _twins()
    counter = CountingInductor()
    compile_blocks(compiled, backend=counter)
    compiled.eval(), eager.eval()
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(7))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(compiled.generate(prompt, **kw), eager.generate(prompt, **kw))
    assert counter.graphs == 0
