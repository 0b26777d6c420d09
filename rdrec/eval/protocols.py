"""Evaluation protocols: turn a batch into (scores, target_index, valid) via the model's scoring API.

Every strategy exposes the same two scoring calls (RecBole-like), so every strategy is evaluated by
the same code (docs/protocol.md):

- ``model.score_all(batch) -> [B, num_items + 1]``; column 0 is the padding item, ids are 1..num_items.
- ``model.score_candidates(batch, candidates[B, C]) -> [B, C]``.

Protocols are built from Hydra config (``_target_: rdrec.eval.protocols.FullRanking``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

PAD_ITEM = 0


class Scorer(Protocol):
    def score_all(self, batch: dict[str, Any]) -> Tensor: ...

    def score_candidates(self, batch: dict[str, Any], candidates: Tensor) -> Tensor: ...


class Scored(NamedTuple):
    """What a protocol hands to ``RankingMetrics.update`` (with ``batch["user"]``)."""

    scores: Tensor  # [B, C]
    target_index: Tensor  # [B]
    valid: Tensor  # [B, C] bool


def _get(batch: dict[str, Any], key: str, protocol: str) -> Tensor:
    if key not in batch:
        raise KeyError(f"protocol {protocol!r} needs batch[{key!r}]; batch has keys {sorted(batch)}")
    return batch[key]


def _check_scores(scores: Tensor, rows: int, cols: int, what: str) -> None:
    if scores.shape != (rows, cols):
        raise ValueError(f"{what} returned shape {tuple(scores.shape)}, expected ({rows}, {cols})")


class RankingProtocol:
    """Common naming: metrics of protocol ``name`` at ``stage`` are logged as ``{prefix}/{metric}``."""

    name: str

    def metric_prefix(self, stage: str) -> str:
        # The default full-ranking protocol owns the bare keys (test/hr@10, docs/architecture.md); others nest.
        return stage if self.name == "full" else f"{stage}/{self.name}"

    def __call__(self, model: Scorer, batch: dict[str, Any]) -> Scored:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FullRanking(RankingProtocol):
    """Rank the target against every item.

    With ``exclude_seen`` the user's earlier items are removed from the ranking: they are known
    positives that would otherwise crowd out the target, and most papers exclude them. The target is
    kept rankable even if it also occurs in the history (repeat consumption): removing it would leave
    no positive to rank at all.
    """

    def __init__(self, exclude_seen: bool = True, name: str = "full") -> None:
        self.exclude_seen = bool(exclude_seen)
        self.name = name

    def __call__(self, model: Scorer, batch: dict[str, Any]) -> Scored:
        target = _get(batch, "target", self.name)
        scores = model.score_all(batch)
        if scores.ndim != 2 or scores.shape[0] != target.shape[0]:
            raise ValueError(f"score_all returned shape {tuple(scores.shape)}, expected ({target.shape[0]}, num_items + 1)")
        num_cols = scores.shape[1]
        target = target.to(device=scores.device, dtype=torch.long)
        if ((target < 1) | (target >= num_cols)).any():
            raise ValueError(f"batch['target'] must hold item ids in 1..{num_cols - 1}, got {target.tolist()[:10]}")

        valid = torch.ones_like(scores, dtype=torch.bool)
        valid[:, PAD_ITEM] = False
        if self.exclude_seen:
            seen = _get(batch, "seen", self.name).to(device=scores.device, dtype=torch.long)
            if seen.numel() and ((seen < 0) | (seen >= num_cols)).any():
                raise ValueError(f"batch['seen'] holds ids outside 0..{num_cols - 1}")
            valid.scatter_(1, seen, False)  # padding 0s only re-mask column 0
            valid.scatter_(1, target.unsqueeze(1), True)  # re-consumed target stays rankable
        return Scored(scores, target, valid)


class CandidateRanking(RankingProtocol):
    """Rank the target among a persisted candidate list ``batch[f"{name}_candidates"]``.

    Id 0 inside a row is padding (rows of different length) and never counts.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, model: Scorer, batch: dict[str, Any]) -> Scored:
        candidates = _get(batch, f"{self.name}_candidates", self.name).long()
        target_index = _get(batch, f"{self.name}_target_index", self.name).long()
        rows, cols = candidates.shape
        scores = model.score_candidates(batch, candidates)
        _check_scores(scores, rows, cols, "score_candidates")
        candidates = candidates.to(scores.device)
        target_index = target_index.to(scores.device)
        if target_index.shape != (rows,) or ((target_index < 0) | (target_index >= cols)).any():
            raise ValueError(f"batch['{self.name}_target_index'] must be [B] indices in 0..{cols - 1}")

        # The positive at target_index must be the batch's target: a misaligned candidate list would
        # otherwise be scored without complaint.
        positive = candidates.gather(1, target_index.unsqueeze(1)).squeeze(1)
        if (positive == PAD_ITEM).any():
            raise ValueError(f"{self.name}: target_index points at padding (item 0)")
        if "target" in batch:
            target = batch["target"].to(device=scores.device, dtype=torch.long)
            wrong = positive != target
            if wrong.any():
                r = int(wrong.nonzero()[0])
                raise ValueError(
                    f"{self.name}: candidate at target_index is not batch['target'] in {int(wrong.sum())} rows "
                    f"(first: row {r}, candidate {int(positive[r])}, target {int(target[r])})"
                )
        return Scored(scores, target_index, candidates != PAD_ITEM)
