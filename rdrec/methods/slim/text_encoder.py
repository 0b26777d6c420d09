"""A sentence encoder for SLIM's rationales and item text: a sentence-transformers model, frozen or trainable.

``TextEncoder(model)`` takes a ``SentenceTransformer`` or a path/name it can load (the shipped all-MiniLM-L6-v2:
``rdrec.backbones.shipped.all_minilm_l6_v2(data_dir)``). ``forward(texts)`` returns one vector per text and
carries gradients when ``trainable``; ``encode(texts)`` is the batched, no-grad path with a progress bar for
whole tables. An empty text (a user without a rationale, an item without text) encodes to the zero vector,
which the fusion models treat as "no text".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, model, trainable: bool = False, normalize: bool = True, batch_size: int = 64,
                 max_seq_length: int | None = 256, device: str | None = None):
        super().__init__()
        self.source = str(model) if not isinstance(model, nn.Module) else type(model).__name__
        if not isinstance(model, nn.Module):
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model), device=device or "cpu")
        if max_seq_length:
            model.max_seq_length = max_seq_length
        self.st, self.trainable, self.normalize, self.batch_size = model, trainable, normalize, batch_size
        self.st.requires_grad_(trainable)
        if not trainable:
            self.st.eval()

    @property
    def dim(self) -> int:
        return int(self.st.get_embedding_dimension())

    def train(self, mode: bool = True):
        # a frozen encoder stays in eval mode (no dropout) whatever its parent does
        super().train(mode and self.trainable)
        return self

    def forward(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), dim]; differentiable when ``trainable``."""
        device = next(self.st.parameters()).device
        out = torch.zeros(len(texts), self.dim, device=device)
        rows = [i for i, t in enumerate(texts) if t and t.strip()]
        if not rows:
            return out
        prepare = getattr(self.st, "preprocess", None) or self.st.tokenize  # sentence-transformers ≥ 6 / older
        features = prepare([texts[i] for i in rows])
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            vectors = self.st(features)["sentence_embedding"]
        if self.normalize:
            vectors = F.normalize(vectors, dim=-1)
        return out.index_put((torch.tensor(rows, device=device),), vectors.to(out.dtype))

    @torch.no_grad()
    def encode(self, texts: list[str], progress: bool = True, desc: str = "encoding") -> torch.Tensor:
        """All ``texts`` in batches (longest first, so padding is small), on the CPU, in input order."""
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i] or ""))
        out = torch.zeros(len(texts), self.dim)
        was = self.st.training
        self.st.eval()
        try:
            for start in tqdm(range(0, len(order), self.batch_size), desc=desc, disable=not progress,
                              unit="batch", leave=False):
                idx = order[start:start + self.batch_size]
                out[idx] = self.forward([texts[i] for i in idx]).float().cpu()
        finally:
            self.st.train(was)
        return out

    def describe(self) -> str:
        """What produced the vectors (enters the vector cache key)."""
        return f"{self.source}|dim={self.dim}|norm={self.normalize}|max_len={self.st.max_seq_length}"
