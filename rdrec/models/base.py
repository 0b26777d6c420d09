"""The interface every conventional sequential recommender implements (plain nn.Module, no Lightning).

Item ids are 1..num_items; 0 is padding. Sequences arrive left-padded: the most recent item is in the last
column. A model turns a history into one vector per position and scores items by a dot product with
``item_embeddings()`` (plus ``item_bias()`` when it has one), so full ranking is one matrix product and the same
vectors serve SLIM's fusion (``user_embedding``) and DELRec's top-k inputs.
"""

from __future__ import annotations

import torch
from torch import nn


class SequentialRecommender(nn.Module):
    num_items: int
    hidden_size: int  # D, the width of the vectors returned (GRU4Rec: embedding_size; Caser: 2 × embedding_size)

    def training_pairs(
        self, items: torch.Tensor, users: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """From training windows ``items`` [B, L+1] (left-padded), the hidden states that predict a next item
        and those items: ``(hidden [B, T, D], targets [B, T])``; target 0 marks a position without a label
        (padding, or an unmasked position for cloze models), which the loss ignores."""
        raise NotImplementedError

    def user_embedding(self, history: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """The vector [B, D] that scores the item following ``history`` [B, L]."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """[num_items + 1, D] output embeddings; row 0 is padding and is never ranked."""
        raise NotImplementedError

    def item_bias(self) -> torch.Tensor | None:
        """Optional [num_items + 1] additive score bias (Caser has one)."""
        return None

    # ---- derived: the same for every model -----------------------------------------------------------------
    def scores(self, hidden: torch.Tensor, first_item: int = 0) -> torch.Tensor:
        """Scores of items ``first_item..num_items`` for hidden states [..., D] → [..., num_items + 1 - first_item].

        ``first_item=1`` leaves out the padding column without copying the logits (the training loss uses it)."""
        out = hidden @ self.item_embeddings()[first_item:].T
        bias = self.item_bias()
        return out if bias is None else out + bias[first_item:]

    def score_pairs(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score of item ``items[i]`` for hidden state ``hidden[i]``: [P, D], [P] → [P]."""
        out = (hidden * self.item_embeddings()[items]).sum(-1)
        bias = self.item_bias()
        return out if bias is None else out + bias[items]

    def score_all(self, history: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(self.user_embedding(history, users))

    def score_candidates(
        self, history: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores [B, C] of candidate ids [B, C] without scoring every item."""
        hidden = self.user_embedding(history, users)  # [B, D]
        out = (self.item_embeddings()[candidates] * hidden.unsqueeze(1)).sum(-1)
        bias = self.item_bias()
        return out if bias is None else out + bias[candidates]
