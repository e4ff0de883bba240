"""Specification of moai_llm/losses.py: every loss equals its full-logits reference in value and
gradient (fp32, 1e-5), respects ignore_index=-100, averages over labelled tokens (or divides by
num_items_in_batch), and the fused form never builds the [tokens x vocab] logits."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from moai_llm.errors import MoaiInputError
from moai_llm.losses import (
    LossFunction,
    Objective,
    chunked_cross_entropy_loss,
    create_loss_function,
    fused_linear_cross_entropy,
    fused_linear_loss,
    logits_loss,
)

N, H, V = 45, 24, 97
TOL = dict(atol=1e-5, rtol=1e-5)


def make_inputs(n=N, h=H, v=V, ignore_every=4, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=gen, dtype=dtype) * 0.3).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=gen)
    if ignore_every:
        labels[::ignore_every] = -100
    return hidden, weight, labels


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


# References written from the definitions, on full logits.
def focal_reference(logits, labels, gamma, alpha):
    keep = labels != -100
    logp = F.log_softmax(logits[keep], -1).gather(1, labels[keep][:, None]).squeeze(1)
    return (-alpha * (1 - logp.exp()) ** gamma * logp).mean()


def smooth_reference(logits, labels, smoothing):
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


def multi_reference(logits, labels, ce, focal, smooth, gamma, smoothing):
    return (
        ce * F.cross_entropy(logits, labels)
        + focal * focal_reference(logits, labels, gamma, 1.0)
        + smooth * smooth_reference(logits, labels, smoothing)
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 4096])
def test_fused_cross_entropy_equals_full_logits_in_value_and_gradient(chunk_size):
    hidden, weight, labels = make_inputs()
    loss = fused_linear_cross_entropy(hidden, weight, labels, chunk_size=chunk_size)
    ref = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_ignored_rows_get_zero_gradient_and_fully_ignored_chunks_are_fine():
    hidden, weight, labels = make_inputs(ignore_every=0)
    labels[:20] = -100  # the first chunks (size 8) hold no labelled token at all
    loss = fused_linear_cross_entropy(hidden, weight, labels, chunk_size=8)
    ref = F.cross_entropy(hidden @ weight.t(), labels)
    torch.testing.assert_close(loss, ref, **TOL)
    grad_h, grad_w = grads(loss, hidden, weight)
    assert torch.all(grad_h[:20] == 0)
    torch.testing.assert_close(grad_w, grads(ref, weight)[0], **TOL)


def test_all_tokens_ignored_gives_zero_loss_and_zero_grads_not_nan():
    hidden, weight, labels = make_inputs()
    labels[:] = -100
    loss = fused_linear_cross_entropy(hidden, weight, labels, chunk_size=8)
    assert loss.item() == 0.0
    grad_h, grad_w = grads(loss, hidden, weight)
    assert torch.all(grad_h == 0) and torch.all(grad_w == 0)


def test_num_items_in_batch_makes_accumulated_micro_batches_equal_the_whole_batch():
    hidden, weight, labels = make_inputs(n=40, ignore_every=0)
    labels[:17] = -100  # first micro-batch: 3 labelled tokens; second: 20
    total = int((labels != -100).sum())
    micro = [
        fused_linear_cross_entropy(hidden[i : i + 20], weight, labels[i : i + 20],
                                   chunk_size=6, num_items_in_batch=total)
        for i in (0, 20)
    ]  # fmt: skip
    accumulated = micro[0] + micro[1]
    whole = F.cross_entropy(hidden @ weight.t(), labels)
    torch.testing.assert_close(accumulated, whole, **TOL)
    got = grads(accumulated, hidden, weight)
    for g, want in zip(got, grads(whole, hidden, weight), strict=True):
        torch.testing.assert_close(g, want, **TOL)


def test_int32_labels_from_prepared_datasets_are_accepted():
    hidden, weight, labels = make_inputs()
    loss = fused_linear_cross_entropy(hidden, weight, labels.to(torch.int32), chunk_size=8)
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.t(), labels), **TOL)
    logits = (hidden @ weight.t()).detach()
    got = chunked_cross_entropy_loss(logits, labels.to(torch.int32), chunk_size=8)
    torch.testing.assert_close(got, F.cross_entropy(logits, labels), **TOL)


def test_num_items_in_batch_as_tensor_divides_the_sum():
    hidden, weight, labels = make_inputs()
    loss = fused_linear_cross_entropy(hidden, weight, labels, num_items_in_batch=torch.tensor(100))
    ref = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum") / 100
    torch.testing.assert_close(loss, ref, **TOL)
    torch.testing.assert_close(grads(loss, hidden)[0], grads(ref, hidden)[0], **TOL)


def test_batched_hidden_and_scaled_backward_fill_dot_grad_like_autograd():
    hidden, weight, labels = make_inputs(n=2 * 15)
    hidden3 = hidden.detach().reshape(2, 15, H).requires_grad_()
    w = weight.detach().clone().requires_grad_()
    (3.0 * fused_linear_cross_entropy(hidden3, w, labels.reshape(2, 15), chunk_size=4)).backward()
    ref = 3.0 * F.cross_entropy((hidden3 @ weight.t()).reshape(-1, V), labels)
    ref_h, ref_w = grads(ref, hidden3, weight)
    assert hidden3.grad.shape == (2, 15, H)
    torch.testing.assert_close(hidden3.grad, ref_h, **TOL)
    torch.testing.assert_close(w.grad, ref_w, **TOL)


def test_frozen_weight_and_no_grad_evaluation():
    hidden, weight, labels = make_inputs()
    frozen = weight.detach()
    loss = fused_linear_cross_entropy(hidden, frozen, labels, chunk_size=5)
    torch.testing.assert_close(
        grads(loss, hidden)[0],
        grads(F.cross_entropy(hidden @ frozen.t(), labels), hidden)[0],
        **TOL,
    )
    with torch.no_grad():
        value = fused_linear_cross_entropy(hidden, weight, labels, chunk_size=5)
    assert not value.requires_grad
    torch.testing.assert_close(value, F.cross_entropy(hidden @ weight.t(), labels).detach(), **TOL)


def test_backward_twice_is_refused_rather_than_wrong():
    hidden, weight, labels = make_inputs()
    loss = fused_linear_cross_entropy(hidden, weight, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_bf16_autocast_returns_grads_in_input_dtypes_and_close_values():
    hidden, weight, labels = make_inputs()
    hidden_bf16 = hidden.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_linear_cross_entropy(hidden_bf16, weight, labels, chunk_size=8)
    assert loss.dtype == torch.float32
    grad_h, grad_w = grads(loss, hidden_bf16, weight)
    assert grad_h.dtype == torch.bfloat16 and grad_w.dtype == torch.float32
    ref = F.cross_entropy(hidden @ weight.t(), labels)
    torch.testing.assert_close(loss, ref, atol=0.05, rtol=0.02)
    torch.testing.assert_close(grad_w, grads(ref, weight)[0], atol=5e-3, rtol=0.05)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_fused_loss_never_materialises_the_full_logits():
    n, v, h, chunk = 64, 200, 8, 16
    hidden, weight, labels = make_inputs(n=n, h=h, v=v)
    with _LargestTensor() as fused:
        fused_linear_cross_entropy(hidden, weight, labels, chunk_size=chunk).backward()
    with _LargestTensor() as full:
        F.cross_entropy(hidden @ weight.t(), labels).backward()
    assert full.largest >= n * v
    assert fused.largest <= chunk * v < n * v


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_matches_its_definition_in_both_forms(gamma):
    hidden, weight, labels = make_inputs()
    fn = create_loss_function({"type": "focal", "params": {"gamma": gamma, "alpha": 0.25}})
    loss = fn(hidden, weight, labels, chunk_size=6)
    ref = focal_reference(hidden @ weight.t(), labels, gamma, 0.25)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(got, want, **TOL)
    logits = (hidden @ weight.t()).detach().requires_grad_()
    on_logits = fn.on_logits(logits, labels, chunk_size=10)
    torch.testing.assert_close(on_logits, ref.detach(), **TOL)
    want = grads(focal_reference(logits, labels, gamma, 0.25), logits)[0]
    torch.testing.assert_close(grads(on_logits, logits)[0], want, **TOL)


def test_focal_with_gamma_zero_is_alpha_times_cross_entropy_even_for_confident_tokens():
    logits = torch.zeros(4, 10)
    labels = torch.tensor([0, 1, 2, -100])
    logits[0, 0] = 200.0  # p_y == 1 exactly in fp32: no 0 * inf
    logits.requires_grad_()
    loss = logits_loss(logits, labels, Objective(ce_weight=0, focal_weight=1, focal_gamma=0.5))
    assert torch.isfinite(grads(loss, logits)[0]).all()
    loss0 = logits_loss(logits, labels, Objective(ce_weight=0, focal_weight=1, focal_gamma=0.0,
                                                  focal_alpha=0.5))  # fmt: skip
    torch.testing.assert_close(loss0, 0.5 * F.cross_entropy(logits, labels), **TOL)


def test_label_smoothing_matches_torch_in_both_forms():
    hidden, weight, labels = make_inputs()
    fn = create_loss_function({"type": "label_smoothing", "params": {"smoothing": 0.1}})
    loss = fn(hidden, weight, labels, chunk_size=9)
    ref = smooth_reference(hidden @ weight.t(), labels, 0.1)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(got, want, **TOL)
    logits = (hidden @ weight.t()).detach().requires_grad_()
    got = fn.on_logits(logits, labels)
    want = smooth_reference(logits, labels, 0.1)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(grads(got, logits)[0], grads(want, logits)[0], **TOL)


def test_seed_multi_objective_block_is_the_weighted_sum_of_the_three_losses():
    block = {
        "type": "multi_objective",
        "params": {"ce_weight": 0.6, "focal_weight": 0.3, "smooth_weight": 0.1,
                   "focal_gamma": 2.0, "smoothing": 0.1},
    }  # fmt: skip
    fn = create_loss_function(block)
    hidden, weight, labels = make_inputs()
    loss = fn(hidden, weight, labels, chunk_size=11, num_items_in_batch=None)
    ref = multi_reference(hidden @ weight.t(), labels, 0.6, 0.3, 0.1, 2.0, 0.1)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(got, want, **TOL)
    logits = (hidden @ weight.t()).detach()
    torch.testing.assert_close(fn(logits, labels), ref.detach(), **TOL)  # seed style call


def test_fused_loss_takes_any_objective_directly():
    hidden, weight, labels = make_inputs()
    obj = Objective(ce_weight=0.5, smooth_weight=0.5, smoothing=0.2)
    loss = fused_linear_loss(hidden, weight, labels, obj, chunk_size=3)
    logits = hidden @ weight.t()
    ref = 0.5 * F.cross_entropy(logits, labels) + 0.5 * smooth_reference(logits, labels, 0.2)
    torch.testing.assert_close(loss, ref, **TOL)


@pytest.mark.parametrize("chunk_size", [5, 8192])
def test_chunked_cross_entropy_on_3d_logits_equals_torch_and_leaves_logits_intact(chunk_size):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 17, V, generator=gen).requires_grad_()
    labels = torch.randint(0, V, (3, 17), generator=gen)
    labels[0, :10] = -100
    before = logits.detach().clone()
    loss = chunked_cross_entropy_loss(logits, labels, chunk_size=chunk_size)
    ref = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    torch.testing.assert_close(loss, ref, **TOL)
    torch.testing.assert_close(grads(loss, logits)[0], grads(ref, logits)[0], **TOL)
    assert torch.equal(logits.detach(), before)


def test_chunked_cross_entropy_keeps_bf16_gradients_in_bf16():
    logits = torch.randn(20, V).bfloat16().requires_grad_()
    labels = torch.randint(0, V, (20,))
    loss = chunked_cross_entropy_loss(logits, labels, chunk_size=6, num_items_in_batch=40)
    ref = F.cross_entropy(logits.float(), labels, reduction="sum") / 40
    torch.testing.assert_close(loss, ref, **TOL)
    (grad,) = grads(loss, logits)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), grads(ref, logits)[0].float(), atol=1e-3, rtol=1e-2)


def test_create_loss_function_returns_a_model_loss_fn_with_the_fused_signature():
    fn = create_loss_function({"type": "cross_entropy", "params": {}})
    assert isinstance(fn, LossFunction)
    expected = list(inspect.signature(fused_linear_cross_entropy).parameters)
    assert list(inspect.signature(fn).parameters) == expected
    hidden, weight, labels = make_inputs()
    torch.testing.assert_close(
        fn(hidden, weight, labels, num_items_in_batch=7),
        fused_linear_cross_entropy(hidden, weight, labels, num_items_in_batch=7),
    )
    assert create_loss_function(None).objective == fn.objective


@pytest.mark.parametrize(
    ("config", "named", "listed"),
    [
        ({"type": "dice"}, "'dice'", "cross_entropy, focal, label_smoothing, multi_objective"),
        ({"type": "focal", "params": {"gama": 2}}, "['gama']", "alpha, chunk_size, gamma"),
        ({"type": "cross_entropy", "extra": 1}, "['extra']", "['params', 'type']"),
    ],
)
def test_unknown_type_or_param_is_a_value_error_naming_it_and_the_valid_ones(config, named, listed):
    with pytest.raises(ValueError) as err:
        create_loss_function(config)
    assert named in str(err.value) and listed in str(err.value)
    assert isinstance(err.value, MoaiInputError)  # the CLI prints it as one red line, exit 2


@pytest.mark.parametrize(
    "params",
    [
        {"ce_weight": 0.5, "focal_weight": 0.3, "smooth_weight": 0.1},  # sums to 0.9
        {"ce_weight": 1.2, "focal_weight": -0.2, "smooth_weight": 0.0},
        {"focal_gamma": -1.0},
        {"smoothing": 1.5},
        {"chunk_size": 0},
        {"reduction": "sum"},
        {"focal_gamma": "2"},
    ],
)
def test_out_of_range_values_are_refused(params):
    with pytest.raises(ValueError):
        create_loss_function({"type": "multi_objective", "params": params})


def test_a_configured_loss_is_the_models_loss_fn_with_exact_parameter_gradients():
    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    torch.manual_seed(0)
    model = MoaiForCausalLM(MoaiConfig.from_preset("tiny"))
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100  # e.g. a prompt without loss
    model.loss_fn = create_loss_function(
        {"type": "multi_objective", "params": {"ce_weight": 0.6, "focal_weight": 0.3,
                                               "smooth_weight": 0.1, "chunk_size": 5}}
    )  # fmt: skip
    loss = model(input_ids=ids, labels=labels).loss
    got = torch.autograd.grad(loss, list(model.parameters()))
    logits = model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size)
    ref = multi_reference(logits, labels[:, 1:].reshape(-1), 0.6, 0.3, 0.1, 2.0, 0.1)
    torch.testing.assert_close(loss, ref, **TOL)
    want = torch.autograd.grad(ref, list(model.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL)
