"""Ranking metrics: exact values on hand-made cases, agreement with torchmetrics, tie/mask rules, DDP gather."""

from __future__ import annotations

import math
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG

from rdrec.eval.ranking import RankingMetrics, metrics_from_ranks, pessimistic_rank


# --------------------------------------------------------------------------- pessimistic_rank


def test_rank_hand_computed():
    scores = torch.tensor(
        [
            [0.9, 0.5, 0.7, 0.1],  # target col 1 (0.5): 0.9 and 0.7 are above -> rank 3
            [0.2, 0.3, 0.4, 0.8],  # target col 3 (0.8): nobody above -> rank 1
            [0.6, 0.6, 0.1, 0.6],  # target col 0 (0.6): cols 1 and 3 tie -> both placed above -> rank 3
        ]
    )
    ranks = pessimistic_rank(scores, torch.tensor([1, 3, 0]))
    assert ranks.tolist() == [3, 1, 3]
    assert ranks.dtype == torch.long


def test_metrics_hand_computed():
    # ranks 1, 3, 6 over three users
    m = metrics_from_ranks(torch.tensor([1, 3, 6]), ks=(1, 5, 10), mrr_k=5)
    # HR@1: only rank 1 hits -> 1/3; HR@5: ranks 1, 3 -> 2/3; HR@10: all -> 1
    assert m["hr@1"] == pytest.approx(1 / 3, abs=1e-12)
    assert m["hr@5"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["hr@10"] == pytest.approx(1.0, abs=1e-12)
    # NDCG@1: 1/log2(2) = 1 for the first user only -> 1/3
    assert m["ndcg@1"] == pytest.approx(1 / 3, abs=1e-12)
    # NDCG@5: 1/log2(2) + 1/log2(4) + 0 = 1 + 0.5 -> 1.5 / 3 = 0.5
    assert m["ndcg@5"] == pytest.approx(0.5, abs=1e-12)
    # NDCG@10: 1 + 0.5 + 1/log2(7) -> (1.5 + 0.356207...) / 3
    assert m["ndcg@10"] == pytest.approx((1.5 + 1 / math.log2(7)) / 3, abs=1e-12)
    # MRR: (1 + 1/3 + 1/6) / 3 = 1.5 / 3 = 0.5 ; MRR@5 drops rank 6: (1 + 1/3) / 3 = 4/9
    assert m["mrr"] == pytest.approx(0.5, abs=1e-12)
    assert m["mrr@5"] == pytest.approx(4 / 9, abs=1e-12)
    assert list(m) == ["hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10", "mrr", "mrr@5"]
    assert all(isinstance(v, float) for v in m.values())


def test_metrics_default_keys_and_errors():
    m = metrics_from_ranks(torch.tensor([2]))
    assert set(m) == {"hr@1", "hr@5", "hr@10", "hr@20", "ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"}
    # rank 2: NDCG@K = 1/log2(3) for K >= 2
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(3), abs=1e-12)
    with pytest.raises(ValueError, match="no ranks"):
        metrics_from_ranks(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="1-based"):
        metrics_from_ranks(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positive"):
        metrics_from_ranks(torch.tensor([1]), ks=(0, 5))


def _torchmetrics_reference(scores, target_index, valid, ks):
    """Reference numbers from torchmetrics' retrieval metrics (one query per row)."""
    b, c = scores.shape
    rel = torch.zeros(b, c, dtype=torch.long)
    rel[torch.arange(b), target_index] = 1
    if valid is not None:
        rel[~valid] = -100  # torchmetrics drops entries whose target equals ignore_index
    indexes = torch.arange(b).unsqueeze(1).expand(b, c)
    out = {}

    def run(metric, key):
        metric.update(scores.flatten(), rel.flatten(), indexes=indexes.flatten())
        out[key] = metric.compute().item()

    kw = {} if valid is None else {"ignore_index": -100}
    for k in ks:
        run(RetrievalHitRate(top_k=k, **kw), f"hr@{k}")
        run(RetrievalNormalizedDCG(top_k=k, **kw), f"ndcg@{k}")
    run(RetrievalMRR(**kw), "mrr")
    run(RetrievalMRR(top_k=ks[-1], **kw), f"mrr@{ks[-1]}")
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_agrees_with_torchmetrics(masked):
    g = torch.Generator().manual_seed(0)
    b, c, ks = 150, 40, (1, 5, 10, 20)
    scores = torch.rand(b, c, generator=g, dtype=torch.float64)  # continuous: no ties
    target_index = torch.randint(0, c, (b,), generator=g)
    valid = None
    if masked:
        valid = torch.rand(b, c, generator=g) > 0.3
        valid[torch.arange(b), target_index] = True  # torchmetrics would drop a masked positive
    ours = metrics_from_ranks(pessimistic_rank(scores, target_index, valid), ks, mrr_k=20)
    ref = _torchmetrics_reference(scores, target_index, valid, ks)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_constant_scorer_gets_no_credit():
    b, c = 4, 7
    scores = torch.zeros(b, c)
    target_index = torch.tensor([0, 3, 6, 2])
    ranks = pessimistic_rank(scores, target_index)
    assert ranks.tolist() == [c] * b  # every other candidate ties the target and goes above it
    m = metrics_from_ranks(ranks, ks=(1, 5, 6))
    assert m["hr@1"] == m["hr@5"] == m["hr@6"] == 0.0
    assert m["ndcg@6"] == 0.0

    # with a mask: rank = number of valid candidates (target included)
    valid = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0],  # 2 valid
            [0, 0, 0, 1, 1, 1, 0],  # 3 valid
            [1, 1, 1, 1, 1, 1, 1],  # 7 valid
            [0, 0, 0, 0, 0, 0, 0],  # target masked too: counted anyway -> 1 valid
        ],
        dtype=torch.bool,
    )
    assert pessimistic_rank(scores, target_index, valid).tolist() == [2, 3, 7, 1]


def test_tie_with_one_other_item_ranks_target_below():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    # target col 0 ties col 2, col 1 is higher -> rank 1 + 2 = 3 (not 2)
    assert pessimistic_rank(scores, torch.tensor([0])).item() == 3
    assert pessimistic_rank(scores, torch.tensor([2])).item() == 3
    # -inf target loses to every valid candidate, +inf target wins
    s = torch.tensor([[float("-inf"), 0.0, float("-inf")], [float("inf"), 0.0, 1.0]])
    assert pessimistic_rank(s, torch.tensor([0, 0])).tolist() == [3, 1]


def test_masked_items_never_count_and_target_always_counts():
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.05]])
    target = torch.tensor([0])
    assert pessimistic_rank(scores, target).item() == 3  # 0.9 and 0.8 above
    valid = torch.tensor([[True, False, True, True]])
    assert pessimistic_rank(scores, target, valid).item() == 2  # 0.9 masked out
    valid = torch.tensor([[False, False, False, True]])
    assert pessimistic_rank(scores, target, valid).item() == 1  # target masked: still ranked, nothing above
    # masked NaN is ignored (it never takes part in the comparison)
    scores_nan = torch.tensor([[0.1, float("nan"), 0.8, 0.05]])
    assert pessimistic_rank(scores_nan, target, torch.tensor([[True, False, True, True]])).item() == 2


def test_nan_raises_naming_rows():
    scores = torch.rand(4, 5)
    scores[1, 2] = float("nan")
    scores[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*\[1, 3\]"):
        pessimistic_rank(scores, torch.zeros(4, dtype=torch.long))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="out of range"):
        pessimistic_rank(torch.rand(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        pessimistic_rank(torch.rand(3), torch.tensor([0]))
    with pytest.raises(ValueError, match="valid must match"):
        pessimistic_rank(torch.rand(2, 3), torch.tensor([0, 1]), torch.ones(2, 4, dtype=torch.bool))


def test_low_precision_scores():
    scores = torch.tensor([[0.25, 0.5, 0.75]], dtype=torch.bfloat16)
    assert pessimistic_rank(scores, torch.tensor([1])).item() == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 5, (64, 30), generator=g).float()  # many ties
    target = torch.randint(0, 30, (64,), generator=g)
    valid = torch.rand(64, 30, generator=g) > 0.2
    cpu = pessimistic_rank(scores, target, valid)
    gpu = pessimistic_rank(scores.cuda(), target.cuda(), valid.cuda())
    assert gpu.device.type == "cuda" and gpu.cpu().tolist() == cpu.tolist()


# --------------------------------------------------------------------------- RankingMetrics


def _random_batch(seed: int, b: int = 50, c: int = 20):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (b, c), generator=g).float()  # ties on purpose
    target = torch.randint(0, c, (b,), generator=g)
    valid = torch.rand(b, c, generator=g) > 0.25
    return scores, target, valid


def test_batched_accumulation_equals_one_shot():
    scores, target, valid = _random_batch(0)
    users = torch.randperm(50) + 100
    one = RankingMetrics(ks=(1, 5, 10), mrr_k=10)
    one.update(scores, target, users, valid)
    batched = RankingMetrics(ks=(1, 5, 10), mrr_k=10)
    for sl in (slice(0, 7), slice(7, 30), slice(30, 50)):
        batched.update(scores[sl], target[sl], users[sl], valid[sl])
    assert batched.compute() == one.compute()
    # compute() sorts by user, so only the float summation order differs from the direct call
    assert one.compute() == pytest.approx(metrics_from_ranks(pessimistic_rank(scores, target, valid), (1, 5, 10), 10))


def test_per_user_round_trip_sorted():
    m = RankingMetrics()
    m.update(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]), torch.tensor([9, 2]))
    m.update(torch.tensor([[0.3, 0.2, 0.1]]), torch.tensor([2]), torch.tensor([5]))
    users, ranks = m.per_user()
    assert users.tolist() == [2, 5, 9]
    assert ranks.tolist() == [1, 3, 2]


def test_duplicate_user_raises_naming_it():
    m = RankingMetrics()
    m.update(torch.rand(3, 4), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3]))
    m.update(torch.rand(2, 4), torch.zeros(2, dtype=torch.long), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match=r"more than once: \[3\]"):
        m.compute()
    with pytest.raises(ValueError, match="more than once"):
        m.per_user()


def test_empty_and_nan_and_shape_errors():
    m = RankingMetrics()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="empty"):
        m.compute()
    with pytest.raises(ValueError, match="NaN"):
        m.update(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="users has 1 entries"):
        m.update(torch.rand(2, 3), torch.tensor([0, 1]), torch.tensor([0]))


def test_reset_and_merge_state_uneven():
    scores, target, valid = _random_batch(3, b=11)
    users = torch.arange(11)
    a, b = RankingMetrics(), RankingMetrics()
    a.update(scores[:3], target[:3], users[:3], valid[:3])  # 3 users on "rank 0"
    b.update(scores[3:], target[3:], users[3:], valid[3:])  # 8 users on "rank 1"
    a.merge_state(b)
    ref = RankingMetrics()
    ref.update(scores, target, users, valid)
    assert a.compute() == ref.compute()
    a.reset()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="empty"):
        a.compute()


# --------------------------------------------------------------------------- real 2-process gather (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = {"uneven": [3, 8], "one-rank-empty": [5, 0]}  # users per process


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for name, counts in SCENARIOS.items():  # one process group for all scenarios: spawning is the cost
            scores, target, valid = _random_batch(7, b=sum(counts))
            start = sum(counts[:rank])
            sl = slice(start, start + counts[rank])
            m = RankingMetrics(ks=(1, 5), mrr_k=5)
            if counts[rank]:
                m.update(scores[sl], target[sl], torch.arange(sum(counts))[sl], valid[sl])
            users, ranks = m.per_user()
            with warnings.catch_warnings():  # the empty process warns that update() was never called
                warnings.simplefilter("ignore")
                results[name] = (m.compute(), users.tolist(), ranks.tolist())
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_gather(tmp_path):
    """Two real gloo processes with uneven (and zero) users each: every process sees the global result."""
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for name, counts in SCENARIOS.items():
            scores, target, valid = _random_batch(7, b=sum(counts))
            expected_ranks = pessimistic_rank(scores, target, valid).tolist()
            computed, users, ranks = results[name]
            assert users == list(range(sum(counts))), name
            assert ranks == expected_ranks, name
            assert computed == pytest.approx(metrics_from_ranks(torch.tensor(expected_ranks), (1, 5), 5)), name
