"""Ranking metrics shared by every strategy (docs/protocol.md).

Only one item is relevant per evaluated user (leave-one-out), so every metric is a function of the
target's rank among the candidates. We compute that rank once, keep it per user, and derive
HR@K / NDCG@K / MRR from it. Keeping ranks (not per-batch averages) lets Lightning gather them
across DDP processes exactly, lets us detect double-counted users, and lets paired tests compare
two methods user by user.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)


def pessimistic_rank(scores: Tensor, target_index: Tensor, valid: Tensor | None = None) -> Tensor:
    """1-based rank of the target in each row, ties broken against the target.

    ``rank = 1 + #{other valid candidates j : scores[j] >= scores[target]}``.

    Counting ``>=`` (not ``>``) means a candidate that merely ties the target is placed above it, so
    a constant (or degenerate) scorer ranks the target last and earns no credit (docs/protocol.md).

    Args:
        scores: ``[B, C]`` float scores, higher is better.
        target_index: ``[B]`` column of the positive in each row.
        valid: optional ``[B, C]`` bool mask; ``False`` candidates never count. The target itself is
            always treated as valid, whatever the mask says: a protocol that masked it by mistake
            (e.g. a re-consumed item excluded as "seen") must not make the positive vanish, which
            would silently yield rank 1.

    Raises:
        ValueError: on bad shapes, out-of-range target indices, or NaN among the scores that count
            (valid candidates and the target). NaN in masked-out columns is ignored since it never
            takes part in the comparison.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, C], got shape {tuple(scores.shape)}")
    batch, num_cands = scores.shape
    if target_index.shape != (batch,):
        raise ValueError(f"target_index must be [B]={batch}, got shape {tuple(target_index.shape)}")
    if valid is not None and valid.shape != scores.shape:
        raise ValueError(f"valid must match scores {tuple(scores.shape)}, got {tuple(valid.shape)}")
    if batch == 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)

    target_index = target_index.to(device=scores.device, dtype=torch.long)
    bad = (target_index < 0) | (target_index >= num_cands)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()[:10]
        raise ValueError(f"target_index out of range [0, {num_cands}) in rows {rows}")

    is_target = torch.zeros_like(scores, dtype=torch.bool)
    is_target.scatter_(1, target_index.unsqueeze(1), True)
    if valid is None:
        counted = torch.ones_like(is_target)
    else:
        counted = valid.to(device=scores.device, dtype=torch.bool) | is_target

    nan_rows = (torch.isnan(scores) & counted).any(dim=1)
    if nan_rows.any():
        rows = nan_rows.nonzero().flatten().tolist()
        shown = rows[:10]
        more = f" (and {len(rows) - len(shown)} more)" if len(rows) > len(shown) else ""
        raise ValueError(f"NaN scores in batch rows {shown}{more}; the model produced NaN for counted candidates")

    target_score = scores.gather(1, target_index.unsqueeze(1))
    beats_or_ties = (scores >= target_score) & counted & ~is_target
    return 1 + beats_or_ties.sum(dim=1)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    # Hydra hands over ListConfig; normalise to a tuple of ints and reject nonsense early.
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(out)}")
    return out


def metric_names(ks: Iterable[int] = DEFAULT_KS, mrr_k: int | None = None) -> list[str]:
    """The keys ``metrics_from_ranks`` returns, in its order: hr@K, ndcg@K for each K, mrr, mrr@mrr_k."""
    ks = _check_ks(ks)
    return [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"] + ([] if mrr_k is None else [f"mrr@{mrr_k}"])


def metrics_from_ranks(
    ranks: Tensor, ks: Iterable[int] = DEFAULT_KS, mrr_k: int | None = None
) -> dict[str, float]:
    """Mean HR@K, NDCG@K and MRR (plus MRR@K if ``mrr_k``) over 1-based ranks of a single relevant item.

    With one relevant item the ideal DCG is 1, so NDCG@K = 1/log2(rank+1) if rank <= K else 0;
    HR@K = [rank <= K]; MRR = 1/rank; MRR@K = 1/rank if rank <= K else 0.
    """
    ks = _check_ks(ks)
    r = ranks.detach().flatten().to(torch.float64)
    if r.numel() == 0:
        raise ValueError("no ranks to aggregate (was any user evaluated?)")
    if (r < 1).any():
        raise ValueError("ranks are 1-based; found a rank < 1")

    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = (r <= k).double().mean().item()
    gain = 1.0 / torch.log2(r + 1.0)
    for k in ks:
        out[f"ndcg@{k}"] = torch.where(r <= k, gain, torch.zeros_like(gain)).mean().item()
    out["mrr"] = (1.0 / r).mean().item()
    if mrr_k is not None:
        mrr_k = _check_ks([mrr_k])[0]
        out[f"mrr@{mrr_k}"] = torch.where(r <= mrr_k, 1.0 / r, torch.zeros_like(r)).mean().item()
    return out


class RankingMetrics(Metric):
    """Accumulates (user, rank) pairs and reports HR@K / NDCG@K / MRR.

    States are lists concatenated across processes (``dist_reduce_fx="cat"``), which gathers uneven
    per-process counts exactly. A user evaluated twice is an error, not an average: the usual cause
    is a ``DistributedSampler`` padding the last batch with repeated samples, which would bias the
    numbers silently. Use a sampler that does not repeat samples for evaluation.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, ks: Iterable[int] = DEFAULT_KS, mrr_k: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = _check_ks(ks)
        self.mrr_k = None if mrr_k is None else _check_ks([mrr_k])[0]
        self.add_state("users", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor | None, target_index: Tensor | None, users: Tensor, valid: Tensor | None = None,
               ranks: Tensor | None = None) -> None:
        """Accumulate the ranks of the targets among ``scores`` (``pessimistic_rank``), or ``ranks`` computed
        already (e.g. read back from a ``rdrec.eval.journal.ScoreJournal``; ``scores`` and ``target_index`` are
        then not used)."""
        users = users.detach().flatten()
        if ranks is None:
            if users.numel() != scores.shape[0]:
                raise ValueError(f"users has {users.numel()} entries but scores has {scores.shape[0]} rows")
            ranks = pessimistic_rank(scores.detach(), target_index, valid)
        ranks = ranks.detach().flatten().long()
        if users.numel() != ranks.numel():
            raise ValueError(f"users has {users.numel()} entries but ranks has {ranks.numel()}")
        self.users.append(users.to(device=ranks.device, dtype=torch.long))
        self.ranks.append(ranks)

    def sync(self, *args, **kwargs) -> None:
        # torchmetrics stands in a *float* empty tensor for a process that saw no data, and gathering
        # it with other processes' long tensors mismatches dtypes. A long empty tensor avoids that.
        for name in ("users", "ranks"):
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(torch.empty(0, dtype=torch.long, device=self.device))
        super().sync(*args, **kwargs)

    def _collected(self) -> tuple[Tensor, Tensor]:
        """Concatenated (users, ranks), sorted by user; raises if empty or a user repeats."""
        if isinstance(self.users, list) and not self.users:
            raise ValueError("RankingMetrics is empty: update() was never called with any user")
        users = dim_zero_cat(self.users).long()
        ranks = dim_zero_cat(self.ranks).long()
        if users.numel() == 0:
            raise ValueError("RankingMetrics is empty: no user was evaluated")
        users, order = torch.sort(users, stable=True)
        ranks = ranks[order]
        dup = users[1:] == users[:-1]
        if dup.any():
            ids = torch.unique(users[1:][dup]).tolist()
            shown = ids[:10]
            more = f" (and {len(ids) - len(shown)} more)" if len(ids) > len(shown) else ""
            raise ValueError(
                f"users evaluated more than once: {shown}{more}. A padding DistributedSampler repeats "
                "samples across processes; evaluate with a sampler that does not."
            )
        return users, ranks

    def compute(self) -> dict[str, float]:
        _, ranks = self._collected()
        return metrics_from_ranks(ranks, self.ks, self.mrr_k)

    def per_user(self) -> tuple[Tensor, Tensor]:
        """(users, ranks) over all processes, sorted by user id — for artifacts and paired tests."""
        if self._is_synced:  # already gathered (e.g. inside a sync_context)
            return self._collected()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            return self._collected()
