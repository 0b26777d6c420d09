"""Popularity baseline: score = number of training interactions of the item, the same for every user."""

from __future__ import annotations

import torch

from rdrec.modules.base import RecModule


class PopularityModule(RecModule):
    def __init__(self, num_items: int, protocols: dict, ks=(1, 5, 10, 20), mrr_k: int | None = None):
        super().__init__(protocols, ks, mrr_k)
        self.automatic_optimization = False
        # A Parameter (never optimised) rather than a buffer only because DDP refuses to wrap a module without one.
        self.counts = torch.nn.Parameter(torch.zeros(num_items + 1))

    def setup(self, stage: str) -> None:
        # Counts come straight from the training view: exact, and independent of how DDP shards batches.
        if stage == "fit":
            counts = torch.as_tensor(self.trainer.datamodule.train_item_counts(), dtype=torch.float32)
            with torch.no_grad():
                self.counts.copy_(counts)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None  # nothing to learn beyond the counts

    def configure_optimizers(self):
        return None

    def score_all(self, batch: dict) -> torch.Tensor:
        return self.counts.detach().unsqueeze(0).expand(batch["user"].shape[0], -1)
