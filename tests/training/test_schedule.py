"""Learning-rate schedules: WSD, cosine, linear, constant; lengths as steps or fractions."""

import pytest
import torch

from moai_llm.errors import MoaiInputError
from moai_llm.training.schedule import build_scheduler, make_schedule


def test_wsd_warms_up_holds_then_decays_to_min_lr():
    s = make_schedule("wsd", 100, warmup=10, decay=0.2, min_lr_ratio=0.1)
    assert (s.warmup_steps, s.stable_steps, s.decay_steps) == (10, 70, 20)
    assert s.multiplier(0) == pytest.approx(0.1)
    assert s.multiplier(9) == pytest.approx(1.0)
    assert all(s.multiplier(i) == 1.0 for i in range(10, 80))
    assert s.multiplier(99) == pytest.approx(0.1)
    decay = [s.multiplier(i) for i in range(80, 100)]
    assert decay == sorted(decay, reverse=True)


def test_lengths_can_be_fractions_of_the_run():
    s = make_schedule("wsd", 1000, warmup=0.01, stable=0.79, decay=0.2, min_lr_ratio=0.0)
    assert (s.warmup_steps, s.stable_steps, s.decay_steps) == (10, 790, 200)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_cosine_and_linear_decay_over_what_warmup_leaves(kind):
    s = make_schedule(kind, 50, warmup=5, min_lr_ratio=0.0)
    assert s.decay_steps == 45
    assert s.multiplier(4) == 1.0 and s.multiplier(49) == pytest.approx(0.0)
    if kind == "linear":
        assert s.multiplier(27) == pytest.approx(1 - 23 / 45)


def test_wsd_without_a_decay_length_decays_over_the_last_fifth():
    s = make_schedule("wsd", 100, warmup=0, decay=None, min_lr_ratio=0.0)
    assert (s.stable_steps, s.decay_steps) == (80, 20)


def test_constant_and_seed_names():
    assert make_schedule("constant", 10, warmup=0, min_lr_ratio=0.0).multiplier(9) == 1.0
    assert make_schedule("warmup_stable_decay", 10, warmup=0, min_lr_ratio=0.0).kind == "wsd"


def test_bad_schedules_are_input_errors():
    with pytest.raises(MoaiInputError, match="unknown learning-rate schedule"):
        make_schedule("exp", 10, warmup=0, min_lr_ratio=0.0)
    with pytest.raises(MoaiInputError, match="exceed"):
        make_schedule("wsd", 10, warmup=8, decay=5, min_lr_ratio=0.0)
    with pytest.raises(MoaiInputError, match="neither"):
        make_schedule("wsd", 10, warmup=2.5, min_lr_ratio=0.0)


def test_scheduler_state_resumes_exactly():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, make_schedule("cosine", 20, warmup=3, min_lr_ratio=0.0))
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert all(v is None for v in state.get("lr_lambdas", [None]))  # nothing unpicklable
    opt2 = torch.optim.AdamW([p], lr=1.0)
    sched2 = build_scheduler(opt2, make_schedule("cosine", 20, warmup=3, min_lr_ratio=0.0))
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()
