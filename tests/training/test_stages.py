"""Staged training: `--stages` is parsed strictly; during "new-embeddings" only the new rows move
(old rows and every other parameter bit-identical, weight decay included); the switch happens
at the right step; and a run resumed across the boundary reproduces an uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch

from moai_llm.errors import MoaiInputError
from moai_llm.training.stages import Stage, StageController, parse_stages, stage_at

OLD, NEW = 96, 112  # rows 96..111 are the new tokens; the model has 128 rows (16 padding)


def test_parse_stages():
    assert parse_stages("new-embeddings:200,all", range(OLD, NEW)) == [Stage("new-embeddings", 200, 0),
                                                                      Stage("all", None, 200)]
    assert parse_stages(" new-embeddings:5 , all:10 , new-embeddings:2 ", range(OLD, NEW)) == [
        Stage("new-embeddings", 5, 0), Stage("all", 10, 5), Stage("new-embeddings", 2, 15)]
    assert parse_stages(None) == parse_stages("") == [Stage("all", None, 0)]
    assert parse_stages("all") == [Stage("all", None, 0)]  # nothing new needed for "all"


@pytest.mark.parametrize(("text", "message"), [
    ("embeddings:200,all", "unknown stage 'embeddings'"),
    ("new-embeddings:abc,all", "'new-embeddings:abc' needs a positive whole number of steps"),
    ("new-embeddings:0,all", "needs a positive whole number"),
    ("new-embeddings:-5,all", "needs a positive whole number"),
    ("new-embeddings,all", "stage 'new-embeddings' needs a number of steps"),
])
def test_bad_stages_are_refused_naming_the_flag(text, message):
    with pytest.raises(MoaiInputError, match=message) as err:
        parse_stages(text, range(OLD, NEW))
    assert str(err.value).startswith(f"--stages {text}")


def test_stages_with_a_vocabulary_that_did_not_grow_are_refused():
    for rows in (None, range(OLD, OLD)):
        with pytest.raises(MoaiInputError, match=r"--stages new-embeddings:200,all: the vocabulary did not grow"):
            parse_stages("new-embeddings:200,all", rows)


def test_stages_must_leave_steps_for_the_last_stage():
    with pytest.raises(MoaiInputError, match="take 200 steps, as many as the run's 150"):
        parse_stages("new-embeddings:200,all", range(OLD, NEW), max_steps=150)
    assert parse_stages("new-embeddings:200,all", range(OLD, NEW), max_steps=201)


def test_stage_at_switches_at_the_boundary():
    stages = parse_stages("new-embeddings:3,all", range(OLD, NEW))
    assert [stage_at(stages, s).name for s in range(6)] == ["new-embeddings"] * 3 + ["all"] * 3


def _model(tied: bool):
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    torch.manual_seed(0)
    config = MoaiConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                        tie_word_embeddings=tied)
    return MoaiForCausalLM(config)


def _optimizer(model):
    # Decay for matrices (embeddings included), none for norms: as the trainer builds it.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=1e-2, foreach=False)


def _batch(step: int):
    gen = torch.Generator().manual_seed(step)
    return torch.randint(0, NEW, (2, 16), generator=gen)  # uses old and new ids


def _train(model, optimizer, controller, steps, use_hook=True):
    for step in steps:
        controller.apply(step)
        ids = _batch(step)
        model(input_ids=ids, labels=ids).loss.backward()
        if not use_hook:
            controller.mask_grads()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("tied", [False, True])
def test_only_new_rows_move_during_new_embeddings(tied):
    model = _model(tied)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = _optimizer(model)
    controller = StageController(model, optimizer, parse_stages("new-embeddings:4,all", range(OLD, NEW)),
                                 range(OLD, NEW))
    _train(model, optimizer, controller, range(4))
    after = model.state_dict()
    matrices = {"model.embed_tokens.weight", "lm_head.weight"}  # tied: one tensor under both names
    for name, value in after.items():
        if name in matrices:
            assert torch.equal(value[:OLD], before[name][:OLD]), name      # old rows: bit-identical
            assert torch.equal(value[NEW:], before[name][NEW:]), name      # padding rows too
            assert not torch.equal(value[OLD:NEW], before[name][OLD:NEW])  # new rows learned
        else:
            assert torch.equal(value, before[name]), name
    # The stage switch: from step 4 everything trains, with the configured weight decay back.
    _train(model, optimizer, controller, range(4, 5))
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(model.get_input_embeddings().weight[:OLD], before["model.embed_tokens.weight"][:OLD])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_explicit_masking_equals_the_hook():
    runs = []
    for use_hook in (True, False):
        model = _model(False)
        optimizer = _optimizer(model)
        controller = StageController(model, optimizer, parse_stages("new-embeddings:3,all", range(OLD, NEW)),
                                     range(OLD, NEW))
        if not use_hook:
            controller.apply(0)
            for handle in controller._hooks:  # as under FSDP2, where hooks never see the gradient
                handle.remove()
        _train(model, optimizer, controller, range(3), use_hook=use_hook)
        runs.append(model.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


@pytest.mark.parametrize("stop", [2, 3, 4])  # inside stage 1, exactly at the boundary, inside stage 2
def test_resume_across_the_boundary_reproduces_the_uninterrupted_run(stop):
    stages = parse_stages("new-embeddings:3,all", range(OLD, NEW))

    def fresh():
        model = _model(False)
        optimizer = _optimizer(model)
        return model, optimizer, StageController(model, optimizer, stages, range(OLD, NEW))

    model, optimizer, controller = fresh()
    _train(model, optimizer, controller, range(6))
    reference = model.state_dict()

    model, optimizer, controller = fresh()
    _train(model, optimizer, controller, range(stop))
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # what a checkpoint holds

    model, optimizer, controller = fresh()  # a new process: built from scratch, then loaded
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)
    _train(model, optimizer, controller, range(stop, 6))
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name
