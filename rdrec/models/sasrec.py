"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence; the hidden state at each
position scores the next item against the shared input item embeddings. Defaults follow RecBole's SASRec
(hidden 64, 2 layers, 2 heads, inner 256, GELU, LayerNorm eps 1e-12, N(0, 0.02) init) with dropout 0.2,
which suits small data such as ml-100k better than RecBole's 0.5."""

from __future__ import annotations

import torch

from rdrec.models.base import SequentialRecommender
from rdrec.models.layers import TransformerEncoder, init_normal_, next_item_targets


class SASRec(SequentialRecommender):
    def __init__(
        self,
        num_items: int,
        num_users: int = 0,  # unused: SASRec is not personalised beyond the sequence
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.2,
        attn_dropout: float | None = None,  # None: same as dropout
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        max_len: int = 50,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        self.num_items, self.hidden_size, self.max_len = num_items, hidden_size, max_len
        self.encoder = TransformerEncoder(
            num_items + 1, max_len, hidden_size, num_layers, num_heads, inner_size, dropout,
            dropout if attn_dropout is None else attn_dropout, hidden_act, layer_norm_eps,
        )
        init_normal_(self, initializer_range)

    def training_pairs(self, items, users=None):
        inputs, targets = next_item_targets(items[:, -(self.max_len + 1):])
        return self.encoder(inputs, causal=True), targets

    def user_embedding(self, history, users=None):
        return self.encoder(history[:, -self.max_len:], causal=True)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        return self.encoder.item_embedding.weight
