"""GRU4Rec (Hidasi et al., ICLR 2016; Tan et al., DLRS 2016) as in RecBole: item embedding → dropout → GRU →
a dense layer back to the embedding size; items are scored against the shared input item embeddings.
Defaults follow RecBole (embedding 64, GRU 128, 1 layer, dropout 0.3, xavier init).

Left padding: padding embeddings are forced to exactly zero and the GRU has no bias terms (as in RecBole), so
from a zero initial state every gate sees 0 and the state stays exactly 0 through any amount of left padding.
The hidden states at real positions are therefore identical to running on the unpadded sequence, with one
fused GRU call and no packing or sorting."""

from __future__ import annotations

import torch
from torch import nn

from rdrec.models.base import SequentialRecommender
from rdrec.models.layers import next_item_targets


class GRU4Rec(SequentialRecommender):
    def __init__(
        self,
        num_items: int,
        num_users: int = 0,  # unused
        embedding_size: int = 64,
        hidden_size: int = 128,  # the GRU's width; the vectors this model returns have embedding_size
        num_layers: int = 1,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.num_items = num_items
        self.hidden_size = embedding_size  # size of user/position vectors (base-class contract)
        self.item_embedding = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, embedding_size] of left-padded ``items`` [B, L]."""
        # Multiply rather than rely on padding_idx: row 0 of the shared table is also an output embedding and
        # gets gradient from full-softmax scoring, so it is not guaranteed to stay zero.
        x = self.item_embedding(items) * (items > 0).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        out, _ = self.gru(self.emb_dropout(x))
        return self.dense(out)

    def training_pairs(self, items, users=None):
        inputs, targets = next_item_targets(items)
        return self(inputs), targets

    def user_embedding(self, history, users=None):
        return self(history)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight
