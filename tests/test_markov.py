"""The worked example of docs/adding-a-method.md: exact counts on a hand-made case, and the planted signal of
the synthetic data (the next item is usually its cluster successor of the last one) learned far above popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdrec.cli.train import train
from rdrec.methods.markov.chain import TransitionCounts
from tests.conftest import compose_cfg


def test_transition_counts_score_what_followed_the_last_item_with_popularity_breaking_ties():
    sequences = [np.array([], dtype=np.int64), np.array([1, 2, 3]), np.array([1, 2]), np.array([4, 1, 3])]
    chain = TransitionCounts(sequences, num_items=4)
    scores = chain.scores(torch.tensor([1, 0]))
    # after item 1: item 2 twice, item 3 once; popularity (1:3, 2:2, 3:2, 4:1) / 4 breaks ties below one count
    assert scores[0].tolist() == pytest.approx([-np.inf, 0.75, 2.5, 1.5, 0.25])
    # an empty history (padding 0) has no transitions: popularity alone
    assert scores[1].tolist() == pytest.approx([-np.inf, 0.75, 0.5, 0.5, 0.25])


def test_transitions_come_from_training_sequences_only():
    chain = TransitionCounts([np.array([1, 2])], num_items=3)
    assert chain.counts[2].nnz == 0 and chain.counts[1, 2] == 1  # nothing beyond what it was given


@pytest.mark.slow
def test_the_chain_learns_the_planted_successor_rule_far_above_popularity(tmp_path):
    common = ["data=synthetic", "logger=[]", "trainer.enable_progress_bar=false"]
    markov = train(compose_cfg("train", tmp_path / "markov", ["strategy=markov", *common]))
    pop = train(compose_cfg("train", tmp_path / "pop", ["strategy=pop", *common]))
    # the successor rule holds for 60 % of draws; popularity knows nothing of the last item
    assert markov["test/hr@1"] > 0.3
    assert markov["test/hr@1"] > 3 * pop["test/hr@1"]
