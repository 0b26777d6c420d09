"""SLIM's recommenders over text vectors (Wang et al., WWW 2024): ID-based fusion and ID-agnostic matching.

Text vectors come from a sentence encoder (``rdrec.methods.slim.text_encoder``): one per user (the encoded rationale
of the student, or of the teacher) and one per item (title + genres/categories + brand). Both models take them
as tensors ``[num_users + 1, E]`` / ``[num_items + 1, E]``; row 0 and users/items without text are zero rows.

*ID-based* (``SlimFusion``) wraps any ``SequentialRecommender`` (SASRec, GRU4Rec, SR-GNN, …). A linear map brings
a text vector to the ID size D (``P t``), and a linear fusion layer combines it with the backbone's vector::

    user:  h' = h + F_u [P_u r ; h ⊙ P_u r]        (h: the sequence vector, r: the user's rationale vector)
    item:  e' = e + F_i [P_i x ; e ⊙ P_i x]        (e: the item's ID embedding, x: its text vector)
    score(u, i) = h' · e'  (+ the backbone's item bias)

The fusion is written in residual form with no bias anywhere in the text path, so every added term carries the
text vector: **with zero text vectors the scores are exactly the backbone's** (tested), a user without a
rationale is scored by the backbone alone, and ``use_user_text`` / ``use_item_text`` switch the two halves off
(backbone⁺ = item text only; backbone = neither). The product ``h ⊙ P r`` lets the text re-weight the ID
dimensions, which a purely additive term cannot.

*ID-agnostic* (``SlimMatching``): no ID embeddings at all; a user (rationale vector) and an item (text vector)
are projected into one space and matched by cosine similarity over a learned temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rdrec.models.base import SequentialRecommender


class TextFusion(nn.Module):
    """``v + F [P t ; v ⊙ P t]``: projection of a text vector to the ID size, then a linear fusion. Exact
    identity for ``t = 0``."""

    def __init__(self, text_dim: int, dim: int, dropout: float = 0.0):
        super().__init__()
        self.project = nn.Linear(text_dim, dim, bias=False)
        self.fuse = nn.Linear(2 * dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.zeros_(self.fuse.weight)  # starts as the backbone; training moves it
        with torch.no_grad():  # … except the additive part, so the text has a gradient path from the first step
            self.fuse.weight[:, :dim].copy_(torch.eye(dim) * 0.1)

    def forward(self, vectors: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        p = self.dropout(self.project(text))
        return vectors + self.fuse(torch.cat([p, vectors * p], dim=-1))


class SlimFusion(SequentialRecommender):
    def __init__(self, backbone: SequentialRecommender, user_text: torch.Tensor | None = None,
                 item_text: torch.Tensor | None = None, text_dim: int | None = None, use_user_text: bool = True,
                 use_item_text: bool = True, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.num_items, self.hidden_size = backbone.num_items, backbone.hidden_size
        text_dim = text_dim or next(t.size(1) for t in (user_text, item_text) if t is not None)
        self.use_user_text, self.use_item_text = use_user_text, use_item_text
        # the text vectors are data, not parameters: buffers follow the module's device and are not trained
        self.register_buffer("user_text", _table(user_text, text_dim), persistent=False)
        self.register_buffer("item_text", _table(item_text, text_dim, backbone.num_items + 1), persistent=False)
        self.user_fusion = TextFusion(text_dim, backbone.hidden_size, dropout) if use_user_text else None
        self.item_fusion = TextFusion(text_dim, backbone.hidden_size, dropout) if use_item_text else None

    def set_text(self, user_text: torch.Tensor | None = None, item_text: torch.Tensor | None = None) -> None:
        """Replace the text tables (same width), e.g. zeros, or another rationale source."""
        if user_text is not None:
            self.user_text = user_text.to(self.user_text)
        if item_text is not None:
            if item_text.size(0) != self.num_items + 1:
                raise ValueError(f"item_text: expected {self.num_items + 1} rows, got {item_text.size(0)}")
            self.item_text = item_text.to(self.item_text)

    def _user_text(self, users: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        if users is None:
            raise ValueError("SlimFusion with user text needs the users of the batch")
        out = torch.zeros(n, self.user_text.size(1), dtype=like.dtype, device=like.device)
        known = users < self.user_text.size(0)  # users beyond the table have no rationale
        out[known] = self.user_text[users[known]].to(like.dtype)
        return out

    # ---- the SequentialRecommender interface ---------------------------------------------------------------
    def training_pairs(self, items, users=None):
        hidden, targets = self.backbone.training_pairs(items, users)
        if self.user_fusion is not None:
            b, t, d = hidden.shape
            text = self._user_text(users, b, hidden).unsqueeze(1).expand(b, t, -1)
            hidden = self.user_fusion(hidden, text)
        return hidden, targets

    def user_embedding(self, history, users=None):
        hidden = self.backbone.user_embedding(history, users)
        if self.user_fusion is not None:
            hidden = self.user_fusion(hidden, self._user_text(users, hidden.size(0), hidden))
        return hidden

    def item_embeddings(self) -> torch.Tensor:
        emb = self.backbone.item_embeddings()
        if self.item_fusion is not None:
            emb = self.item_fusion(emb, self.item_text.to(emb.dtype))
        return emb

    def item_bias(self):
        return self.backbone.item_bias()


class SlimMatching(SequentialRecommender):
    """ID-agnostic: ``score(u, i) = cos(U r_u, V x_i) / τ``; the history only enters through the rationale
    (and, with ``history_text``, through the mean text vector of the history items). A user without a
    rationale (and without ``history_text``) gets the zero vector: every item ties, and the evaluator's
    pessimistic tie-breaking gives no credit."""

    def __init__(self, num_items: int, text_dim: int, hidden_size: int = 64, history_text: bool = False,
                 temperature: float = 0.1, num_users: int = 0):
        super().__init__()
        self.num_items, self.hidden_size = num_items, hidden_size
        self.register_buffer("user_text", torch.zeros(num_users + 1, text_dim), persistent=False)
        self.register_buffer("item_text", torch.zeros(num_items + 1, text_dim), persistent=False)
        self.user_proj = nn.Linear(text_dim, hidden_size, bias=False)
        self.item_proj = nn.Linear(text_dim, hidden_size, bias=False)
        self.history_proj = nn.Linear(text_dim, hidden_size, bias=False) if history_text else None
        self.log_scale = nn.Parameter(torch.tensor(-math.log(temperature)))

    set_text = SlimFusion.set_text
    _user_text = SlimFusion._user_text

    def _users(self, history: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[B, L] histories → [B, L, H]: the user vector before each position (one rationale per user)."""
        out = self.user_proj(self._user_text(users, history.size(0), self.user_proj.weight)).unsqueeze(1)
        if self.history_proj is not None:
            mask = (history > 0).unsqueeze(-1).to(out.dtype)
            mean = (self.item_text[history] * mask).cumsum(1) / mask.cumsum(1).clamp(min=1.0)
            out = out + self.history_proj(mean)
        else:
            out = out.expand(-1, history.size(1), -1)
        return F.normalize(out, dim=-1) * self.log_scale.exp()

    def training_pairs(self, items, users=None):
        inputs, targets = items[:, :-1], items[:, 1:].clone()
        targets[inputs == 0] = 0  # a target needs some history before it
        return self._users(inputs, users), targets

    def user_embedding(self, history, users=None):
        return self._users(history, users)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        return F.normalize(self.item_proj(self.item_text), dim=-1)


def _table(text: torch.Tensor | None, dim: int, rows: int | None = None) -> torch.Tensor:
    if text is None:
        return torch.zeros(rows or 1, dim)
    if text.dim() != 2 or text.size(1) != dim:
        raise ValueError(f"text vectors: expected [N, {dim}], got {list(text.shape)}")
    if rows is not None and text.size(0) != rows:
        raise ValueError(f"text vectors: expected {rows} rows (ids 0..{rows - 1}), got {text.size(0)}")
    return text.float()
