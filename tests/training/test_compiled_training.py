"""`--compile` through `moai pretrain`'s code path (runner -> launch -> loop): the decoder blocks
compile at the first steps and never again, a compiled run resumed from its checkpoint ends
with the weights of one never stopped (bit for bit), and it trains what the uncompiled run
trains (within float tolerance)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file


def _train(workdir, out, steps: int, compile: bool, resume: str | None = None) -> None:
    from moai_llm.progress import set_quiet
    from moai_llm.training.launcher.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings

    flags = dict(model="tiny", tokenizer=str(workdir / "tok"), dataset=[str(workdir / "data")],
                 output_dir=str(out), max_steps=steps, micro_batch_size=2,
                 gradient_accumulation_steps=2, logging_steps=1, save_steps=4, nproc=1,
                 lr_scheduler="constant", warmup=0, learning_rate=3e-3, compile=compile,
                 tensorboard=False)
    if resume:
        flags["resume"] = resume
    settings, sources = resolve_settings("pretrain", flags=flags)
    set_quiet(True)
    record = prepare_run(settings, sources)
    assert record.plan().compile is compile
    code, _ = launch_run(record, show_progress=False)
    assert code == 0


def _weights(out):
    return load_file(out / "final_model" / "model.safetensors")


@pytest.mark.slow
def test_compiled_blocks_compile_once_and_resume_exactly(workdir, tmp_path):
    from torch._dynamo.utils import counters

    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    before = graphs()
    resumed, straight, eager = tmp_path / "resumed", tmp_path / "straight", tmp_path / "eager"
    _train(workdir, resumed, 4, compile=True)  # compiles here, checkpoint at step 4
    compiled = graphs() - before
    assert compiled >= 1  # the blocks were compiled, not run eagerly
    _train(workdir, resumed, 16, compile=True, resume="auto")  # 12 more steps, from the checkpoint
    _train(workdir, straight, 16, compile=True)
    assert graphs() - before == compiled  # 28 more compiled steps, two new models: no recompilation
    a, b = _weights(resumed), _weights(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # stock names, exact
    _train(workdir, eager, 16, compile=False)
    c = _weights(eager)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) < 1e-4
