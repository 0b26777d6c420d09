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


def test_the_module_counts_training_transitions_only_never_a_validation_or_test_target(tmp_path):
    from types import SimpleNamespace

    from hydra.utils import instantiate

    from rdrec.methods.markov.module import MarkovModule

    cfg = compose_cfg("train", tmp_path, ["data=synthetic", "strategy=markov"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    module = MarkovModule(num_items=dm.num_items, protocols={})
    module.trainer = SimpleNamespace(datamodule=dm)  # what Lightning attaches before setup
    module.setup("fit")
    train_pairs = {}
    for seq in dm.train_view.sequences:
        for a, b in zip(seq[:-1], seq[1:]):
            train_pairs[(int(a), int(b))] = train_pairs.get((int(a), int(b)), 0) + 1
    counts = module.chain.counts.tocoo()
    assert {(int(a), int(b)): int(c) for a, b, c in zip(counts.row, counts.col, counts.data)} == train_pairs
    # the held-out transitions (last training item -> validation target -> test target) are absent unless the
    # same pair also occurs inside some user's training sequence
    for batch in [*dm.val_dataloader(), *dm.test_dataloader()]:
        for history, target in zip(batch["history"][:, -1].tolist(), batch["target"].tolist()):
            assert module.chain.counts[history, target] == train_pairs.get((history, target), 0)


@pytest.mark.slow
def test_the_chain_learns_the_planted_successor_rule_far_above_popularity(tmp_path):
    common = ["data=synthetic", "logger=[]", "trainer.enable_progress_bar=false"]
    markov = train(compose_cfg("train", tmp_path / "markov", ["strategy=markov", *common]))
    pop = train(compose_cfg("train", tmp_path / "pop", ["strategy=pop", *common]))
    # the successor rule holds for 60 % of draws; popularity knows nothing of the last item
    assert markov["test/hr@1"] > 0.3
    assert markov["test/hr@1"] > 3 * pop["test/hr@1"]
