"""Lightning module for conventional sequential recommenders (SASRec, GRU4Rec, Caser, BERT4Rec, …).

The model (``rdrec.models``) maps histories to vectors; this module owns the loss, the optimiser and the
scoring hooks the shared evaluator calls. Losses: full-softmax cross-entropy over all items, or BCE with one
uniformly sampled negative per target (SASRec's original objective). Positions without a target (padding,
unmasked cloze positions) never enter either loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rdrec.models.base import SequentialRecommender
from rdrec.modules.base import RecModule


class SeqRecModule(RecModule):
    def __init__(
        self,
        model: Callable[..., SequentialRecommender],
        num_items: int,
        num_users: int,
        protocols: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: str = "ce",
        ks=(1, 5, 10, 20),
        mrr_k: int | None = None,
    ):
        super().__init__(protocols, ks, mrr_k)
        if loss not in ("ce", "bce"):
            raise ValueError(f"strategy.loss: expected 'ce' or 'bce', got {loss!r}")
        self.model = model(num_items=num_items, num_users=num_users)
        self.num_items, self.loss_name, self.optimizer_factory = num_items, loss, optimizer

    # ---- training ------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hidden, targets = self.model.training_pairs(batch["items"], batch["user"])
        labelled = targets > 0
        hidden, targets = hidden[labelled], targets[labelled]  # [P, D], [P]
        loss = self.cross_entropy(hidden, targets) if self.loss_name == "ce" else self.sampled_bce(hidden, targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model.scores(hidden, first_item=1)  # the padding item is never a class
        return F.cross_entropy(logits, targets - 1)

    def sampled_bce(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # One uniform negative per target; a draw equal to the target is shifted to the next id.
        negatives = torch.randint(1, self.num_items + 1, targets.shape, device=targets.device)
        negatives = torch.where(negatives == targets, negatives % self.num_items + 1, negatives)
        pos = self.model.score_pairs(hidden, targets)
        neg = self.model.score_pairs(hidden, negatives)
        return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.parameters())

    # ---- scoring for the shared evaluator --------------------------------------------------------------------
    def score_all(self, batch: dict) -> torch.Tensor:
        return self.model.score_all(batch["history"], batch["user"])

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        return self.model.score_candidates(batch["history"], candidates, batch["user"])
