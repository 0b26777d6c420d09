"""The random-order reference row: exact, and in the same terms as the project's own metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdrec.eval.ranking import metrics_from_ranks
from rdrec.eval.reference import random_order_expectation


def test_the_expectation_is_the_mean_of_the_metrics_over_every_equally_likely_rank():
    sizes = [1, 3, 7, 20, 101]
    # a random order puts the target at each rank 1..n with probability 1/n: enumerate them, weight per user
    expected = {}
    for n in sizes:
        per_user = metrics_from_ranks(torch.arange(1, n + 1), ks=(5, 10))
        for k, v in per_user.items():
            expected[k] = expected.get(k, 0.0) + v / len(sizes)
    got = random_order_expectation(sizes, ks=(5, 10))
    assert set(got) == {"hr@5", "hr@10", "ndcg@5", "ndcg@10"}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-12)


def test_a_seeded_draw_agrees_with_the_expectation():
    rng = np.random.default_rng(0)
    sizes = rng.integers(50, 200, size=20_000)
    ranks = torch.from_numpy(rng.integers(1, sizes + 1))  # uniform rank in 1..n per user
    drawn = metrics_from_ranks(ranks, ks=(10,))
    exact = random_order_expectation(sizes, ks=(10,))
    assert drawn["hr@10"] == pytest.approx(exact["hr@10"], abs=0.005)
    assert drawn["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=0.003)


def test_a_user_without_candidates_is_refused():
    with pytest.raises(ValueError, match="at least one candidate"):
        random_order_expectation([3, 0])
