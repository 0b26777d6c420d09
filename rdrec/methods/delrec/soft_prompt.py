"""A block of trainable soft-prompt vectors spliced into a Hugging Face LM's input (DELRec's distilled patterns).

DELRec places its soft prompt *inside* a text prompt ("… the recommendation pattern of SASRec is [soft prompt]
…"), so the vectors are not simply prepended as peft's prompt tuning does: the caller marks the N slot positions
of ``input_ids`` with ``soft_mask`` (any token id may sit there; its embedding is replaced) and the wrapper writes
the N vectors into those positions, in order. The same code serves decoder-only models (the whole sequence) and
encoder-decoder models (the encoder input), and it composes with peft adapters (LoRA / AdaLoRA) on the wrapped
model, which prompt tuning in peft does not.

Initialisation follows Lester et al. (2021): the vectors start as the input embeddings of randomly chosen vocabulary
tokens (``init="vocab"``), or as Gaussian noise of the embedding table's scale (``init="normal"``).
"""

from __future__ import annotations

import torch
from torch import nn

from rdrec.backbones.heads import causal_hidden, causal_logits


class SoftPromptLM(nn.Module):
    def __init__(self, model: nn.Module, kind: str, num_tokens: int = 100, init: str = "vocab", seed: int = 0):
        super().__init__()
        if kind not in ("causal", "seq2seq"):
            raise ValueError(f"kind: expected 'causal' or 'seq2seq', got {kind!r}")
        if num_tokens < 0:
            raise ValueError(f"num_tokens: expected >= 0, got {num_tokens}")
        self.model, self.kind, self.num_tokens = model, kind, int(num_tokens)
        embedding = model.get_input_embeddings()
        table = embedding.weight
        generator = torch.Generator().manual_seed(seed)
        if init == "vocab":
            # through the embedding module, so models that scale their embeddings (Gemma) get vectors in input space
            rows = torch.randint(0, table.shape[0], (self.num_tokens,), generator=generator)
            with torch.no_grad():
                values = embedding(rows.to(table.device)).float().cpu().clone()
        elif init == "normal":
            values = torch.randn(self.num_tokens, table.shape[1], generator=generator) * float(table.detach().float().std())
        else:
            raise ValueError(f"init: expected 'vocab' or 'normal', got {init!r}")
        self.soft_prompt = nn.Parameter(values.to(table.dtype))

    @property
    def hidden_size(self) -> int:
        return self.soft_prompt.shape[1]

    def embed(self, input_ids: torch.Tensor, soft_mask: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings [B, L, H] with the soft prompt written into the ``soft_mask`` positions of each row."""
        embeds = self.model.get_input_embeddings()(input_ids)
        if soft_mask is None or self.num_tokens == 0:
            return embeds
        per_row = soft_mask.sum(1)
        if (per_row != self.num_tokens).any():
            raise ValueError(
                f"soft_mask must mark exactly {self.num_tokens} positions per row, got {sorted(set(per_row.tolist()))}"
            )
        prompt = self.soft_prompt.to(embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
        return embeds.masked_scatter(soft_mask.unsqueeze(-1).to(torch.bool), prompt.contiguous())

    def forward(self, input_ids: torch.Tensor, soft_mask: torch.Tensor | None = None, **kwargs):
        """The wrapped model's forward with ``inputs_embeds`` in place of ``input_ids`` (encoder input for seq2seq)."""
        return self.model(inputs_embeds=self.embed(input_ids, soft_mask), **kwargs)

    # ---- decoder-only models: hidden states, and logits only where they are needed (rdrec.backbones.heads) ------
    def _causal(self) -> nn.Module:
        if self.kind != "causal":
            raise TypeError("hidden_states() / logits() exist only for decoder-only models")
        return self.model

    def hidden_states(self, input_ids: torch.Tensor, soft_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """The last layer's hidden states [B, L, H] (after the final norm), no vocabulary projection."""
        return causal_hidden(self._causal(), inputs_embeds=self.embed(input_ids, soft_mask), **kwargs)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's next-token logits for hidden states of any leading shape (with Gemma's soft-cap)."""
        return causal_logits(self._causal(), hidden)

    def encoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, soft_mask: torch.Tensor | None = None):
        if self.kind != "seq2seq":
            raise TypeError("encoder() exists only for encoder-decoder models")
        return self.model.get_encoder()(inputs_embeds=self.embed(input_ids, soft_mask), attention_mask=attention_mask)
