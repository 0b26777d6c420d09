"""Protocols: which candidates are valid, where the target is, and how metric keys are prefixed."""

from __future__ import annotations

import pytest
import torch

from rdrec.eval import CandidateRanking, FullRanking, RankingMetrics, pessimistic_rank


class FixedScorer:
    """Scores item i with a fixed per-item value (same for every user); records the calls it gets."""

    def __init__(self, item_scores: torch.Tensor) -> None:
        self.item_scores = item_scores  # [num_items + 1], column 0 = padding
        self.candidate_calls: list[torch.Tensor] = []

    def score_all(self, batch):
        return self.item_scores.expand(batch["user"].shape[0], -1).clone()

    def score_candidates(self, batch, candidates):
        self.candidate_calls.append(candidates)
        return self.item_scores[candidates]


# 6 items; the padding column gets the highest score of all, so any leak of column 0 would show.
ITEM_SCORES = torch.tensor([100.0, 0.6, 0.5, 0.9, 0.8, 0.1, 0.7])
# item order by score: 3 (0.9) > 4 (0.8) > 6 (0.7) > 1 (0.6) > 2 (0.5) > 5 (0.1)


def _batch():
    return {
        "user": torch.tensor([10, 11, 12]),
        "target": torch.tensor([2, 1, 5]),
        # right-padded histories; user 12 re-consumes its target 5
        "seen": torch.tensor([[3, 4, 0], [6, 0, 0], [5, 3, 1]]),
        "sampled_candidates": torch.tensor([[4, 2, 5, 1], [3, 4, 1, 0], [5, 2, 6, 0]]),
        "sampled_target_index": torch.tensor([1, 2, 0]),
    }


def test_full_ranking_excludes_seen_and_padding():
    scored = FullRanking()(FixedScorer(ITEM_SCORES), _batch())
    assert scored.scores.shape == (3, 7)
    assert scored.target_index.tolist() == [2, 1, 5]
    assert not scored.valid[:, 0].any()  # padding never valid
    ranks = pessimistic_rank(*scored)
    # user 10, target 2 (0.5), seen 3 and 4 removed: above it 6 (0.7), 1 (0.6) -> rank 3
    # user 11, target 1 (0.6), seen 6 removed: above it 3, 4 -> rank 3
    # user 12, target 5 (0.1), seen 3, 1 removed (5 is the target and stays): above it 4, 6, 2 -> rank 4
    assert ranks.tolist() == [3, 3, 4]
    assert scored.valid[2, 5]  # re-consumed target stays valid


def test_full_ranking_without_seen_exclusion():
    scored = FullRanking(exclude_seen=False, name="full_all")(FixedScorer(ITEM_SCORES), _batch())
    assert scored.valid[:, 1:].all() and not scored.valid[:, 0].any()
    # every real item counts: target 2 (0.5) has 3, 4, 6, 1 above -> 5; target 1 (0.6) -> 4; target 5 (0.1) -> 6
    assert pessimistic_rank(*scored).tolist() == [5, 4, 6]


def test_full_ranking_rejects_padding_target():
    batch = _batch()
    batch["target"] = torch.tensor([0, 1, 5])
    with pytest.raises(ValueError, match="item ids"):
        FullRanking()(FixedScorer(ITEM_SCORES), batch)


def test_candidate_ranking_uses_persisted_lists_and_masks_padding():
    model = FixedScorer(ITEM_SCORES)
    batch = _batch()
    scored = CandidateRanking("sampled")(model, batch)
    assert torch.equal(model.candidate_calls[0], batch["sampled_candidates"])
    assert scored.valid.tolist() == [[True] * 4, [True, True, True, False], [True, True, True, False]]
    # row 0: [4 .8, 2 .5*, 5 .1, 1 .6] -> 4, 1 above -> rank 3
    # row 1: [3 .9, 4 .8, 1 .6*, pad 100] -> pad ignored -> rank 3
    # row 2: [5 .1*, 2 .5, 6 .7, pad 100] -> rank 3
    assert pessimistic_rank(*scored).tolist() == [3, 3, 3]


def test_candidate_ranking_checks_alignment_and_keys():
    batch = _batch()
    batch["sampled_target_index"] = torch.tensor([0, 2, 0])  # row 0 now points at item 4, target is 2
    with pytest.raises(ValueError, match="row 0, candidate 4, target 2"):
        CandidateRanking("sampled")(FixedScorer(ITEM_SCORES), batch)
    batch["sampled_target_index"] = torch.tensor([1, 3, 0])  # row 1 points at padding
    with pytest.raises(ValueError, match="padding"):
        CandidateRanking("sampled")(FixedScorer(ITEM_SCORES), batch)
    with pytest.raises(KeyError, match="candidates_candidates"):
        CandidateRanking("candidates")(FixedScorer(ITEM_SCORES), _batch())


def test_constant_model_gets_no_credit_under_every_protocol():
    model = FixedScorer(torch.zeros(7))
    for protocol, expected in ((FullRanking(), [4, 5, 4]), (CandidateRanking("sampled"), [4, 3, 3])):
        # full: valid items = 6 minus seen (2, 1, 2) -> 4, 5, 4 ; sampled: non-padding candidates
        assert pessimistic_rank(*protocol(model, _batch())).tolist() == expected


def test_metric_prefixes():
    assert FullRanking().metric_prefix("test") == "test"
    assert FullRanking().metric_prefix("val") == "val"
    assert FullRanking(exclude_seen=False, name="full_all").metric_prefix("test") == "test/full_all"
    assert CandidateRanking("sampled").metric_prefix("test") == "test/sampled"


def test_protocol_feeds_ranking_metrics_end_to_end():
    model, batch = FixedScorer(ITEM_SCORES), _batch()
    protocol, metric = CandidateRanking("sampled"), RankingMetrics(ks=(1, 3))
    s = protocol(model, batch)
    metric.update(s.scores, s.target_index, batch["user"], s.valid)
    logged = {f"{protocol.metric_prefix('test')}/{k}": v for k, v in metric.compute().items()}
    assert logged["test/sampled/hr@3"] == 1.0 and logged["test/sampled/hr@1"] == 0.0
    assert logged["test/sampled/mrr"] == pytest.approx(1 / 3)
