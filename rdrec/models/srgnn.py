"""SR-GNN (Wu et al., AAAI 2019): a history becomes a directed graph over its distinct items (an edge for each
consecutive pair), a gated graph network updates the node states, and an attention readout over the sequence
combined with the most recent item's state scores items against the shared input item embeddings. Defaults
follow RecBole (embedding 64, one propagation step, uniform(±1/√D) init, binary edges normalised by in- and
out-degree).

Graph without Python loops: every position is a node, but a repeated item is represented by its first
occurrence — edges connect these representatives, other positions and padding are isolated nodes that nothing
reads. The network is permutation-equivariant, so this equals the usual unique-item graph; and it is unchanged
by left padding. A prefix's node states cannot be read off the full history's graph (edges from later items
change them), so ``training_pairs`` encodes one graph per labelled position: up to B × L graphs per batch, about
as many per epoch as RecBole's one-sample-per-prefix training."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rdrec.models.base import SequentialRecommender
from rdrec.models.layers import next_item_targets


class GatedGraphCell(nn.Module):
    """One propagation step: aggregate along in- and out-edges, then a GRU-style gated update."""

    def __init__(self, d: int):
        super().__init__()
        self.edge_in, self.edge_out = nn.Linear(d, d), nn.Linear(d, d)
        self.bias_in, self.bias_out = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.w_ih, self.w_hh = nn.Linear(2 * d, 3 * d), nn.Linear(d, 3 * d)

    def forward(self, a_in: torch.Tensor, a_out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a_in @ self.edge_in(h) + self.bias_in, a_out @ self.edge_out(h) + self.bias_out], -1)
        i_r, i_z, i_n = self.w_ih(x).chunk(3, -1)
        h_r, h_z, h_n = self.w_hh(h).chunk(3, -1)
        reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return h + update * (new - h)


class SRGNN(SequentialRecommender):
    BUCKETS = 8  # length buckets for training prefixes (speed only)

    def __init__(self, num_items: int, num_users: int = 0, embedding_size: int = 64, step: int = 1):
        super().__init__()
        d = embedding_size
        self.num_items, self.hidden_size, self.step = num_items, d, step
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.cell = GatedGraphCell(d)
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        self.score = nn.Linear(d, 1, bias=False)
        self.transform = nn.Linear(2 * d, d)
        bound = 1.0 / math.sqrt(d)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @staticmethod
    def graph(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For left-padded ``items`` [N, L]: each position's representative (first position holding the same
        item; itself for padding) [N, L], and the degree-normalised in/out adjacency [N, L, L] between
        representatives (binary edges, as in the reference code)."""
        length = items.size(1)
        real = items > 0
        same = (items.unsqueeze(2) == items.unsqueeze(1)) & real.unsqueeze(2)  # [N, L, L]
        arange = torch.arange(length, device=items.device)
        rep = torch.where(real, same.int().argmax(-1), arange)  # argmax: the first True
        edge = (real[:, :-1] & real[:, 1:]).unsqueeze(-1).float()  # consecutive real pairs
        src = F.one_hot(rep[:, :-1], length).float() * edge  # [N, L-1, L]
        dst = F.one_hot(rep[:, 1:], length).float()
        adj = (src.transpose(1, 2) @ dst).clamp_(max=1.0)  # adj[u, v] = 1 if some u → v
        a_in = adj.transpose(1, 2) / adj.sum(1).clamp(min=1.0).unsqueeze(-1)  # v gathers its predecessors
        a_out = adj / adj.sum(2).clamp(min=1.0).unsqueeze(-1)  # u gathers its successors
        return rep, a_in, a_out

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """The vector [N, D] that scores the item after each left-padded history ``items`` [N, L]."""
        rep, a_in, a_out = self.graph(items)
        h = self.item_embedding(items)
        for _ in range(self.step):
            h = self.cell(a_in, a_out, h)
        seq = h.gather(1, rep.unsqueeze(-1).expand_as(h))  # each position reads its item's node
        last = seq[:, -1]  # left padding: the most recent item
        alpha = self.score(torch.sigmoid(self.query(last).unsqueeze(1) + self.key(seq)))  # [N, L, 1]
        pooled = (alpha * seq * (items > 0).unsqueeze(-1)).sum(1)
        return self.transform(torch.cat([pooled, last], -1))

    def training_pairs(self, items, users=None):
        inputs, targets = next_item_targets(items)
        b, length = inputs.shape
        # One graph per labelled position t: the inputs up to column t, left-padded to width L.
        rows = (targets > 0).flatten().nonzero().squeeze(1)
        prefixes = F.pad(inputs, (length - 1, 0)).unfold(1, length, 1).reshape(b * length, length)[rows]
        hidden = inputs.new_zeros(b * length, self.hidden_size, dtype=self.item_embedding.weight.dtype)
        # Encoding is exact under removal of left padding, so encode in length buckets, each cut to its longest
        # prefix: about half the work of padding every prefix to L.
        lengths = (prefixes > 0).sum(1)
        for bucket in lengths.argsort().chunk(self.BUCKETS):
            if len(bucket):
                width = int(lengths[bucket].max())
                hidden = hidden.index_put((rows[bucket],), self.encode(prefixes[bucket][:, -width:]))
        return hidden.view(b, length, -1), targets

    def user_embedding(self, history, users=None):
        return self.encode(history)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight
