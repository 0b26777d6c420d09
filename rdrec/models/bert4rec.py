"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained by cloze — random items are replaced by
a [MASK] token and predicted from both sides. To recommend, [MASK] is appended after the history and its
hidden state scores the next item. Defaults follow RecBole 1.2.1's BERT4Rec (hidden 64, 2 layers, 2 heads,
inner 256, dropout 0.2, mask ratio 0.2, half the samples masking only the last item, GELU, N(0, 0.02) init),
including its output head (dense → GELU → LayerNorm) and per-item output bias, both as in the paper's code.

Ids: 0 padding, 1..num_items items, num_items + 1 the [MASK] token (never ranked). Padding: keys at padding
positions are masked out and positions count from the first real item, so left padding changes nothing."""

from __future__ import annotations

import torch
from torch import nn

from rdrec.models.base import SequentialRecommender
from rdrec.models.layers import ACTIVATIONS, TransformerEncoder, init_normal_


class BERT4Rec(SequentialRecommender):
    def __init__(
        self,
        num_items: int,
        num_users: int = 0,  # unused
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.2,
        attn_dropout: float | None = None,  # None: same as dropout
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        max_len: int = 50,
        mask_ratio: float = 0.2,
        last_item_ratio: float = 0.5,  # share of rows that mask only their most recent item (see cloze)
        initializer_range: float = 0.02,
    ):
        super().__init__()
        self.num_items, self.hidden_size, self.max_len = num_items, hidden_size, max_len
        self.mask_ratio, self.last_item_ratio = mask_ratio, last_item_ratio
        self.mask_token = num_items + 1
        self.encoder = TransformerEncoder(
            num_items + 2, max_len, hidden_size, num_layers, num_heads, inner_size, dropout,
            dropout if attn_dropout is None else attn_dropout, hidden_act, layer_norm_eps,
        )
        self.head = nn.Sequential(  # the paper's output transform before the dot product
            nn.Linear(hidden_size, hidden_size),
            ACTIVATIONS[hidden_act](),
            nn.LayerNorm(hidden_size, eps=layer_norm_eps),
        )
        self.bias = nn.Parameter(torch.zeros(num_items + 1))
        init_normal_(self, initializer_range)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(items, causal=False))

    def cloze(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask each real item of ``items`` [B, L] with probability ``mask_ratio`` (torch's global RNG); no
        80/10/10 replacement, as in RecBole. A row with items but no mask drawn gets its most recent item masked,
        so every row teaches something. With probability ``last_item_ratio`` a row instead masks only its most
        recent item: the paper's extra samples that mimic the test task (RecBole 1.2.1: ``ft_ratio`` 0.5, drawn
        per batch, not per row). Returns (masked inputs, targets): targets hold the original item where masked
        and 0 elsewhere."""
        real = items > 0
        masked = real & (torch.rand(items.shape, device=items.device) < self.mask_ratio)
        if self.last_item_ratio > 0:
            last_only = torch.rand(items.size(0), device=items.device) < self.last_item_ratio
            masked[last_only] = False
        masked[:, -1] |= real[:, -1] & ~masked.any(1)  # left padding: the last column is the most recent item
        return items.masked_fill(masked, self.mask_token), items.masked_fill(~masked, 0)

    def training_pairs(self, items, users=None):
        # Drop the window's oldest column so the input width is L (≤ max_len), as at inference.
        inputs, targets = self.cloze(items[:, 1:][:, -self.max_len:])
        return self(inputs), targets

    def user_embedding(self, history, users=None):
        # Keep the last max_len - 1 items and append [MASK] where the next item goes (for a history of width
        # max_len this is RecBole's shift left by one).
        history = history[:, -(self.max_len - 1):] if self.max_len > 1 else history[:, :0]
        mask = torch.full_like(history[:, :1], self.mask_token)
        return self(torch.cat([history, mask], 1))[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        return self.encoder.item_embedding.weight[: self.num_items + 1]

    def item_bias(self) -> torch.Tensor:
        return self.bias
