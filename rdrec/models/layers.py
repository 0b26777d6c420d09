"""Pieces shared by the sequential recommenders: next-item targets, position ids, attention masks, and the
post-LayerNorm Transformer block SASRec and BERT4Rec both use (BERT/RecBole style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def next_item_targets(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a left-padded window [B, L+1] into inputs [B, L] and next-item targets [B, L]; a target is 0 where
    its input position is padding (nothing to predict from) or where it is padding itself."""
    inputs, targets = items[:, :-1], items[:, 1:]
    return inputs, targets.masked_fill(inputs == 0, 0)


def positions(items: torch.Tensor) -> torch.Tensor:
    """Position ids counted from the first real item (0, 1, …), as RecBole's right-padded sequences have them.
    Counting from the first real item rather than from the window's first column makes every hidden state
    independent of how much left padding precedes the sequence; padding columns get 0 (never read)."""
    return ((items > 0).cumsum(1) - 1).clamp_(min=0)


def attention_mask(items: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask [B, 1, L, L] for ``F.scaled_dot_product_attention`` (True = may attend).

    Real keys only, plus the diagonal: a padding query then attends to itself alone, so no row is fully masked
    (which gives NaN) and real queries never see a padding key, so padding cannot leak into real positions."""
    length = items.size(1)
    eye = torch.eye(length, dtype=torch.bool, device=items.device)
    allowed = (items > 0).unsqueeze(1) | eye  # [B, L(query), L(key)]
    if causal:
        allowed = allowed & torch.ones_like(eye).tril()
    return allowed.unsqueeze(1)


class TransformerBlock(nn.Module):
    """Self-attention and feed-forward sublayers, each followed by dropout, residual and LayerNorm (post-LN, as
    in BERT and RecBole). Attention goes through ``scaled_dot_product_attention``: on CPU it was as fast as a
    hand-written softmax and faster than ``nn.TransformerEncoderLayer`` with a per-row mask; on GPU it picks a
    fused kernel."""

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, dropout: float, attn_dropout: float,
                 act: str, layer_norm_eps: float):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"hidden_act: expected one of {sorted(ACTIVATIONS)}, got {act!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads, self.attn_dropout = num_heads, attn_dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size), ACTIVATIONS[act](), nn.Linear(inner_size, hidden_size)
        )
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = self.norm1(x + self.dropout(self.out(a.transpose(1, 2).reshape(b, length, d))))
        return self.norm2(x + self.dropout(self.ffn(x)))


class TransformerEncoder(nn.Module):
    """Item + learned position embeddings → LayerNorm → dropout → ``num_layers`` blocks (RecBole's layout)."""

    def __init__(self, vocab_size: int, max_len: int, hidden_size: int, num_layers: int, num_heads: int,
                 inner_size: int, dropout: float, attn_dropout: float, act: str, layer_norm_eps: float):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, inner_size, dropout, attn_dropout, act, layer_norm_eps)
            for _ in range(num_layers)
        )

    def forward(self, items: torch.Tensor, causal: bool) -> torch.Tensor:
        """Hidden states [B, L, D] of left-padded ``items`` [B, L] (L ≤ max_len)."""
        if items.size(1) > self.max_len:
            raise ValueError(f"sequence length {items.size(1)} exceeds max_len {self.max_len}")
        x = self.item_embedding(items) + self.position_embedding(positions(items))
        x = self.dropout(self.norm(x))
        mask = attention_mask(items, causal)
        for block in self.blocks:
            x = block(x, mask)
        return x


def init_normal_(module: nn.Module, std: float) -> None:
    """BERT/RecBole initialisation: N(0, std) for linear and embedding weights, zero biases, unit LayerNorms;
    embedding padding rows zeroed (lookups never update them: padding_idx blocks that gradient)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()
