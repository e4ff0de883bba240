"""Sequence log-probs from hidden states (alignment/logprobs.py): the values and gradients of
full logits without making them, under fp32, fp64 and bf16 autocast; per document of packed
rows, never predicting a document's first token from the one before; pairs found in rows."""

from __future__ import annotations

import pytest
import torch

from moai_llm.alignment.logprobs import PairLayout, document_logprobs, token_logprobs


def _full(hidden, weight, labels):
    keep = labels != -100
    logits = hidden @ weight.T
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)[keep]
    return logp.gather(1, labels[keep, None]).squeeze(1)


def test_values_and_gradients_equal_full_logits_fp64():
    torch.manual_seed(0)
    h = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(17, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, -100, 3, 4, 5, -100, 7, 8, 9, 0, 16, -100, 2])
    weights = torch.arange(1.0, 11.0, dtype=torch.float64)  # a different gradient for every token
    assert torch.autograd.gradcheck(lambda h, w: (token_logprobs(h, w, y, chunk_size=3)[0] * weights).sum(), (h, w))
    assert torch.allclose(token_logprobs(h, w, y, chunk_size=4)[0], _full(h, w, y))


def test_bf16_autocast_backward_multiplies_as_forward_did():
    torch.manual_seed(0)
    h = torch.randn(40, 32, requires_grad=True)
    w = torch.randn(50, 32, requires_grad=True)
    y = torch.randint(0, 50, (40,))
    g = torch.randn(40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = token_logprobs(h, w, y, chunk_size=7)[0]
    (ours * g).sum().backward()
    got = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.functional.linear(h, w)  # bf16, as autocast computes it
    ref = torch.log_softmax(logits.float(), -1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(ours, ref, atol=1e-5)
    (ref * g).sum().backward()
    for a, b in zip(got, (h.grad, w.grad), strict=True):
        assert (a - b).abs().max() <= 2e-2 * b.abs().max()  # bf16 products: the same up to bf16 rounding


def test_documents_of_packed_rows_are_summed_apart():
    torch.manual_seed(0)
    h, w = torch.randn(2 * 6, 8), torch.randn(11, 8)
    labels = torch.tensor([[-100, 3, 4, 5, 6, 7], [-100, 1, -100, 9, 2, -100]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 0, 1]])
    sums, counts = document_logprobs(h, w, labels, pos)
    ref = torch.log_softmax(h @ w.T, -1)
    # row 0: doc 0 = tokens 0-2 (labels at 1, 2), doc 1 = tokens 3-5: its first token (label 5) is
    # never predicted from doc 0's last hidden state, so only labels at 4 and 5 count
    assert counts.tolist() == [2, 2, 2, 0]
    assert torch.allclose(sums[0], ref[0, 3] + ref[1, 4])
    assert torch.allclose(sums[1], ref[3, 6] + ref[4, 7])
    assert torch.allclose(sums[2], ref[6 + 0, 1] + ref[6 + 2, 9])


def test_pair_layout_finds_chosen_and_rejected_in_rows():
    pos = torch.tensor([[0, 1, 0, 1, 0, 1, 0], [0, 1, 2, 0, 1, 2, 3]])
    layout = PairLayout.from_rows(pos, [[7, 7, 2, 2], [5, 5]], [[0, 1, 0, 1], [1, 0]])
    by_pair = {int(p): (int(c), int(r)) for p, c, r in zip(layout.pair_ids, layout.chosen, layout.rejected, strict=True)}
    assert by_pair == {7: (0, 1), 2: (2, 3), 5: (5, 4)}  # document numbers across the batch
    with pytest.raises(ValueError, match="without both sequences"):
        PairLayout.from_rows(pos, [[7, 7, 2], [5, 5]], [[0, 1, 0], [1, 0]])
