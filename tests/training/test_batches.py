"""Data order: deterministic from the seed, one number of position, same rows per step for
any split into processes and micro-batches."""

import numpy as np

from moai_llm.training.worker.batches import BatchOrder


def test_order_is_a_seeded_permutation_per_epoch():
    a, b = BatchOrder(10, seed=1), BatchOrder(10, seed=1)
    assert (a.rows(0, 25) == b.rows(0, 25)).all()
    assert sorted(a.rows(0, 10)) == list(range(10))  # an epoch visits every row once
    assert sorted(a.rows(10, 10)) == list(range(10))
    assert not (a.rows(0, 10) == a.rows(10, 10)).all()  # a new order each epoch
    assert not (BatchOrder(10, seed=2).rows(0, 10) == a.rows(0, 10)).all()


def test_a_step_covers_the_same_rows_however_it_is_split():
    order = BatchOrder(100, seed=0)
    one = np.concatenate(order.micro_batches(3, micro_batch_size=2, accumulation=4, rank=0, world=1))
    two = np.concatenate([m for r in (0, 1)
                          for m in order.micro_batches(3, micro_batch_size=2, accumulation=2, rank=r, world=2)])
    assert sorted(one) == sorted(two) == sorted(order.rows(24, 8))


def test_held_out_rows_are_never_trained_on():
    order = BatchOrder(90, seed=0, first_row=0)
    assert order.rows(0, 500).max() < 90
