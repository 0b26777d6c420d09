"""Decoder-only LMs without their full vocabulary projection: hidden states, then logits only where a loss or a
score reads them.

A causal LM's forward projects every position onto the vocabulary, though a distillation loss reads only the
positions that predict a target token (SLIM's student: the rationale, about a fifth of a batch's positions;
DELRec: ~10 answer tokens of ~450), and the projection is the largest single matmul of a small model with a large
vocabulary (Gemma-3-270M: 262k × 640, more than its transformer per position). These helpers split the model into
its body and its head, so callers project only the rows they need. They work under peft adapters (the adapted
layers live inside the same modules) and apply a model's final logit soft-cap where it has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # the label of a position that carries no loss (Hugging Face's convention)


def causal_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, float | None]:
    """(the transformer without its head, the output projection, the final logit soft-cap or None)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (getattr(base, base.base_model_prefix), base.get_output_embeddings(),
            getattr(base.config, "final_logit_softcapping", None))


def causal_hidden(model: nn.Module, **inputs) -> torch.Tensor:
    """The last layer's hidden states [B, L, H] (after the final norm), no vocabulary projection. ``inputs``: what
    the model's forward takes (``input_ids`` or ``inputs_embeds``, ``attention_mask``, ``position_ids``, …)."""
    return causal_parts(model)[0](**inputs).last_hidden_state


def causal_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits for hidden states of any leading shape (soft-capped where the model is)."""
    _, head, cap = causal_parts(model)
    out = head(hidden)
    return torch.tanh(out / cap) * cap if cap else out


def labelled_nll(model: nn.Module, labels: torch.Tensor, **inputs) -> tuple[torch.Tensor, int]:
    """(mean next-token NLL over the positions whose label is not ``IGNORE``, their number): the value and
    gradient of ``model(**inputs, labels=labels).loss``, with the vocabulary projected at those positions only."""
    hidden = causal_hidden(model, **inputs)
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_logits(model, hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep]), int(keep.sum())
