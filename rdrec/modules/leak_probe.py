"""The id-leak probe (``strategy=leak_probe``): an untrained rule that reads nothing but item ids.

For each user it ranks items by how soon their id follows the id of the user's latest history item: the item
numbered ``last + 1`` first, then ``last + 2``, …, wrapping around after the largest id (the latest item itself
last). Under P5's numbering (``data.split.id_mapping=sequential``: items numbered by first appearance along the
users' sequences) consecutive ids sit on consecutive items of a sequence, so the rule scores far above chance
without learning anything; under the default random numbering it is at chance. Its row shows how much of a
number measured on such ids the numbering alone gives (docs/protocol.md).
"""

from __future__ import annotations

import torch

from rdrec.modules.base import RecModule


class LeakProbeModule(RecModule):
    def __init__(self, num_items: int, protocols: dict, num_users: int | None = None, ks=(1, 5, 10, 20),
                 mrr_k: int | None = None):
        super().__init__(protocols, ks, mrr_k)
        self.num_items = int(num_items)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None  # nothing to learn

    def configure_optimizers(self):
        return None

    def score_all(self, batch: dict) -> torch.Tensor:
        history = batch["history"]  # [B, L], left-padded with 0: the latest item is the last column
        last = history[:, -1].long().unsqueeze(1)
        items = torch.arange(self.num_items + 1, device=history.device).unsqueeze(0)
        gap = (items - last - 1) % self.num_items  # 0 for last + 1, …, num_items - 1 for last itself
        scores = -gap.float()
        scores[:, 0] = float("-inf")  # padding
        return scores
