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

*No training-time leak* (``rdrec/methods/slim/windows.py``): a user may have several rationales, each with the
end of the training-history window it was written from (``set_rationales``). At a training position whose
target has 0-based index ``t`` in the user's training sequence, the model sees the latest rationale whose
window ends at or before ``t`` (none: the zero vector, i.e. the backbone); at validation/test, the user's latest
rationale. ``training_pairs`` therefore needs each window's end (``ends``, the ``end`` key of SLIM's training
batches) and refuses to fuse user text without it. ``set_text(user_text=…)`` gives one rationale per user with
an unknown window: usable at validation/test only. The same rule holds for both models and for any rationale
source (teacher, student).
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


# window end of a rationale whose window is not known: after every training position (usable at evaluation only)
UNKNOWN_END = 2**62


class RationaleTable(nn.Module):
    """Per-user rationale vectors with the ends of the windows they were written from (buffers, not trained).

    ``text`` [R + 1, E] (row 0: no rationale), ``rows`` / ``ends`` [U + 1, K]: user ``u``'s rationales as rows of
    ``text`` and their window ends, sorted by end; unused slots hold row 0 and end ``UNKNOWN_END``."""

    def __init__(self, text_dim: int, num_users: int = 0):
        super().__init__()
        self.register_buffer("text", torch.zeros(1, text_dim), persistent=False)
        self.register_buffer("rows", torch.zeros(num_users + 1, 1, dtype=torch.long), persistent=False)
        self.register_buffer("ends", torch.full((num_users + 1, 1), UNKNOWN_END, dtype=torch.long), persistent=False)

    def set(self, text: torch.Tensor, rows: torch.Tensor | None = None, ends: torch.Tensor | None = None) -> None:
        """``text`` [R + 1, E] with ``rows``/``ends`` [U + 1, K]; without them, ``text`` is [U + 1, E], one
        rationale per user (row ``u``) with an unknown window (evaluation only)."""
        if text.dim() != 2 or text.size(1) != self.text.size(1):
            raise ValueError(f"rationale vectors: expected [N, {self.text.size(1)}], got {list(text.shape)}")
        if rows is None:  # row u + 1 of [zeros; text] is user u's
            n = text.size(0)
            text = torch.cat([text.new_zeros(1, text.size(1)), text])
            rows = torch.arange(1, n + 1).unsqueeze(1)
            ends = torch.full((n, 1), UNKNOWN_END, dtype=torch.long)
        if ends is None or rows.shape != ends.shape or rows.dim() != 2:
            raise ValueError("rationales: rows and ends must both be [num_users + 1, K]")
        if int(rows.max()) >= text.size(0) or int(rows.min()) < 0:
            raise ValueError(f"rationales: rows must index the {text.size(0)} text vectors")
        order = ends.argsort(dim=1, stable=True)
        device = self.text.device
        self.text = text.float().to(device)
        self.rows, self.ends = rows.gather(1, order).to(device), ends.gather(1, order).to(device)

    def set_vectors(self, text: torch.Tensor) -> None:
        """New vectors for the same rationales (a fine-tuned encoder)."""
        if text.shape != self.text.shape:
            raise ValueError(f"rationale vectors: expected {list(self.text.shape)}, got {list(text.shape)}")
        self.text = text.to(self.text)

    def _rows_of(self, users: torch.Tensor):
        known = users < self.rows.size(0)  # users beyond the table have no rationale
        safe = torch.where(known, users, torch.zeros_like(users))
        rows = self.rows[safe] * known.unsqueeze(-1)
        return rows, self.ends[safe]

    def latest(self, users: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[B, E]: each user's latest rationale (validation/test: every window lies in training)."""
        rows, _ = self._rows_of(users)
        count = (rows > 0).sum(1)
        pick = rows.gather(1, (count - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.text[pick].to(like.dtype)

    def at(self, users: torch.Tensor, target_index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[B, T, E]: at each training target (0-based index ``target_index`` [B, T] in the user's training
        sequence), the latest rationale written from a window ending at or before it; zeros if none."""
        rows, ends = self._rows_of(users)
        allowed = ends.unsqueeze(1) <= target_index.unsqueeze(2)  # [B, T, K]; ends are sorted
        count = allowed.sum(2)
        pick = rows.unsqueeze(1).expand(-1, target_index.size(1), -1).gather(2, (count - 1).clamp(min=0).unsqueeze(2))
        pick = pick.squeeze(2) * (count > 0)
        return self.text[pick].to(like.dtype)


def target_index(ends: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width]: 0-based indices in the users' training sequences of a window's last ``width`` columns, for
    windows ending (exclusive) at ``ends`` [B]. Every model's ``training_pairs`` returns its targets aligned to
    the last columns of the window, so this is the index of each returned target."""
    return ends.unsqueeze(1) - width + torch.arange(width, device=ends.device)


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
        self.rationales = RationaleTable(text_dim)
        if user_text is not None:
            self.rationales.set(_table(user_text, text_dim))
        self.register_buffer("item_text", _table(item_text, text_dim, backbone.num_items + 1), persistent=False)
        self.user_fusion = TextFusion(text_dim, backbone.hidden_size, dropout) if use_user_text else None
        self.item_fusion = TextFusion(text_dim, backbone.hidden_size, dropout) if use_item_text else None

    def set_text(self, user_text: torch.Tensor | None = None, item_text: torch.Tensor | None = None) -> None:
        """Replace the text tables (same width), e.g. zeros, or another rationale source. ``user_text``
        [U + 1, E]: one rationale per user, window unknown, so fused at validation/test only."""
        if user_text is not None:
            self.rationales.set(user_text)
        if item_text is not None:
            if item_text.size(0) != self.num_items + 1:
                raise ValueError(f"item_text: expected {self.num_items + 1} rows, got {item_text.size(0)}")
            self.item_text = item_text.to(self.item_text)

    def set_rationales(self, text: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> None:
        """Rationales with their window ends (``RationaleTable.set``): fused at training targets after them."""
        self.rationales.set(text, rows, ends)

    def _user_text(self, users: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        if users is None:
            raise ValueError("SlimFusion with user text needs the users of the batch")
        return self.rationales.latest(users, like)

    def _training_text(self, users, ends, width: int, like: torch.Tensor) -> torch.Tensor:
        if users is None or ends is None:
            raise ValueError("SLIM's training_pairs with user text needs the users and the windows' ends (the `end` "
                             "key of SlimRecDataModule's training batches): a rationale is fused only at targets "
                             "after the history it was written from")
        return self.rationales.at(users, target_index(ends.to(users.device), width), like)

    # ---- the SequentialRecommender interface ---------------------------------------------------------------
    def training_pairs(self, items, users=None, ends=None):
        """As the backbone's; ``ends`` [B]: where each window ends (exclusive) in the user's training sequence."""
        hidden, targets = self.backbone.training_pairs(items, users)
        if self.user_fusion is not None:
            text = self._training_text(users, ends, hidden.size(1), hidden)
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
        self.rationales = RationaleTable(text_dim, num_users)
        self.register_buffer("item_text", torch.zeros(num_items + 1, text_dim), persistent=False)
        self.user_proj = nn.Linear(text_dim, hidden_size, bias=False)
        self.item_proj = nn.Linear(text_dim, hidden_size, bias=False)
        self.history_proj = nn.Linear(text_dim, hidden_size, bias=False) if history_text else None
        self.log_scale = nn.Parameter(torch.tensor(-math.log(temperature)))

    set_text = SlimFusion.set_text
    set_rationales = SlimFusion.set_rationales
    _user_text = SlimFusion._user_text
    _training_text = SlimFusion._training_text

    def _users(self, history: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B, L] histories and rationale vectors [B, L, E] → [B, L, H]: the user vector before each position."""
        out = self.user_proj(text)
        if self.history_proj is not None:
            mask = (history > 0).unsqueeze(-1).to(out.dtype)
            mean = (self.item_text[history] * mask).cumsum(1) / mask.cumsum(1).clamp(min=1.0)
            out = out + self.history_proj(mean)
        return F.normalize(out, dim=-1) * self.log_scale.exp()

    def training_pairs(self, items, users=None, ends=None):
        inputs, targets = items[:, :-1], items[:, 1:].clone()
        targets[inputs == 0] = 0  # a target needs some history before it
        text = self._training_text(users, ends, inputs.size(1), self.user_proj.weight)
        return self._users(inputs, text), targets

    def user_embedding(self, history, users=None):
        text = self._user_text(users, history.size(0), self.user_proj.weight)
        return self._users(history, text.unsqueeze(1).expand(-1, history.size(1), -1))[:, -1]

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
