"""Caser (Tang & Wang, WSDM 2018): the last ``window`` items form an image [window × D]; horizontal filters of
every height 1..window (max-pooled over time) and vertical filters (weighted sums of rows) read it, a dense
layer makes z, and [z; user embedding] (size 2D) scores items against a separate output embedding W2 plus a
bias b2, as in the paper and its reference code (RecBole instead projects back to D and shares embeddings).
Defaults: the paper's (window 5, 16 horizontal filters per height, 4 vertical, ReLU) with RecBole's D 64 and
dropout 0.4 (RecBole 1.2.1 uses 8 horizontal filters). RecBole also adds an L2 penalty (1e-4): use the
optimiser's weight decay for that.

Padding: the model only ever sees fixed-width windows; histories shorter than the window are left-padded with
item 0, whose input embedding is zero and stays zero (padding_idx; W2 is a separate table)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rdrec.models.base import SequentialRecommender
from rdrec.models.layers import next_item_targets


class Caser(SequentialRecommender):
    def __init__(
        self,
        num_items: int,
        num_users: int,
        embedding_size: int = 64,
        window: int = 5,  # the paper's L: how many recent items one prediction reads
        num_horizontal: int = 16,  # horizontal filters per height 1..window
        num_vertical: int = 4,
        dropout: float = 0.4,
    ):
        super().__init__()
        d = embedding_size
        self.num_items, self.num_users, self.window, self.hidden_size = num_items, num_users, window, 2 * d
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.user_embedding_table = nn.Embedding(num_users + 1, d)  # user ids are 1..num_users; 0 unused
        # A horizontal filter of height h spanning all D columns is a Conv1d over time with D input channels.
        self.conv_h = nn.ModuleList(nn.Conv1d(d, num_horizontal, h) for h in range(1, window + 1))
        # A vertical filter [window × 1] is a weighted sum of the window's rows, shared across the D columns.
        self.conv_v = nn.Linear(window, num_vertical)
        self.fc1 = nn.Linear(num_horizontal * window + num_vertical * d, d)
        self.dropout = nn.Dropout(dropout)
        self.W2 = nn.Embedding(num_items + 1, 2 * d)
        self.b2 = nn.Parameter(torch.zeros(num_items + 1))
        # Reference-code init: embeddings N(0, 1/dim), padding row zero; dense layers xavier with zero bias.
        for emb in (self.item_embedding, self.user_embedding_table, self.W2):
            nn.init.normal_(emb.weight, 0.0, 1.0 / emb.embedding_dim)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for lin in (self.conv_v, self.fc1):
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _encode(self, windows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``windows`` [N, window] item ids, ``users`` [N] → hidden [N, 2D]."""
        x = self.item_embedding(windows).transpose(1, 2)  # [N, D, window]
        out_h = [F.relu(conv(x)).amax(-1) for conv in self.conv_h]  # each [N, num_horizontal]
        out_v = self.conv_v(x).flatten(1)  # [N, D * num_vertical]
        z = F.relu(self.fc1(self.dropout(torch.cat([*out_h, out_v], 1))))
        return torch.cat([z, self.user_embedding_table(users)], 1)

    def _fit_window(self, history: torch.Tensor) -> torch.Tensor:
        """The last ``window`` columns, left-padded with 0 when the history is narrower."""
        return F.pad(history, (max(self.window - history.size(1), 0), 0))[:, -self.window:]

    def _users(self, users: torch.Tensor | None) -> torch.Tensor:
        if users is None:
            raise ValueError("Caser is personalised: pass the batch's user ids as `users`")
        return users

    def training_pairs(self, items, users=None):
        users = self._users(users)
        inputs, targets = next_item_targets(items)  # target t is predicted from the items before it
        b, length = inputs.shape
        # windows[:, t] = the `window` items ending at input column t (inclusive), zero-padded on the left.
        windows = F.pad(inputs, (self.window - 1, 0)).unfold(1, self.window, 1)  # [B, L, window]
        hidden = self._encode(windows.reshape(b * length, self.window), users.repeat_interleave(length))
        return hidden.view(b, length, -1), targets

    def user_embedding(self, history, users=None):
        return self._encode(self._fit_window(history), self._users(users))

    def item_embeddings(self) -> torch.Tensor:
        return self.W2.weight

    def item_bias(self) -> torch.Tensor:
        return self.b2
