"""RecModule: every protocol of a batch is scored from one score_all call, with unchanged results."""

from __future__ import annotations

import torch

from rdrec.eval import CandidateRanking, FullRanking
from rdrec.modules.base import RecModule


class CountingModule(RecModule):
    def __init__(self, protocols):
        super().__init__(protocols, ks=(1, 5))
        self.item_scores = torch.tensor([9.0, 0.6, 0.5, 0.9, 0.8, 0.1, 0.7])
        self.calls = 0

    def score_all(self, batch):
        self.calls += 1
        return self.item_scores.expand(batch["user"].shape[0], -1).clone()


def _batch():
    return {
        "user": torch.tensor([0, 1]),
        "target": torch.tensor([2, 1]),
        "seen": torch.tensor([[3, 4], [6, 0]]),
        "sampled_candidates": torch.tensor([[4, 2, 5], [3, 1, 6]]),
        "sampled_target_index": torch.tensor([1, 1]),
    }


def test_protocols_share_one_score_all_call_and_keep_their_results():
    protocols = {
        "full": FullRanking(exclude_seen=True),
        "full_seen": FullRanking(exclude_seen=False, name="full_seen"),
        "sampled": CandidateRanking("sampled"),
    }
    module = CountingModule(protocols)
    module._update_metrics(_batch(), "test")
    assert module.calls == 1
    ranks = {name: module.metrics[f"test_{name}"].per_user()[1].tolist() for name in protocols}
    # 1-based ranks; scores 3:.9 4:.8 6:.7 1:.6 2:.5 5:.1; user 0: target 2, seen 3,4; user 1: target 1, seen 6
    assert ranks == {"full": [3, 3], "full_seen": [5, 4], "sampled": [2, 3]}
