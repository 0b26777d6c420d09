"""``strategy=markov``: the first-order Markov chain as a ``RecModule`` (the shared evaluator does the ranking)."""

from __future__ import annotations

import torch

from rdrec.methods.markov.chain import TransitionCounts
from rdrec.modules.base import RecModule


class MarkovModule(RecModule):
    """Counts come from the datamodule's training view (never from validation or test interactions) and are
    rebuilt in ``setup`` for every stage, so they need no checkpoint: evaluating a saved run gives the same
    numbers."""

    def __init__(self, num_items: int, protocols: dict, ks=(1, 5, 10, 20), mrr_k: int | None = None):
        super().__init__(protocols, ks, mrr_k)
        self.automatic_optimization = False
        self.num_items = num_items
        self.chain: TransitionCounts | None = None
        # DDP only wraps modules that own a parameter; this one is never optimised and scores nothing.
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def setup(self, stage: str) -> None:
        if self.chain is None:
            self.chain = TransitionCounts(self.trainer.datamodule.train_view.sequences, self.num_items)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None  # the counts are complete after setup

    def configure_optimizers(self):
        return None

    def score_all(self, batch: dict) -> torch.Tensor:
        last = batch["history"][:, -1]  # histories are left-padded: the last column is the latest item
        return self.chain.scores(last).to(batch["history"].device)
