"""Batches for SLIM's recommenders: the usual sequential batches plus the text vectors of users and items.

``SlimRecDataModule`` is a ``SeqRecDataModule`` (same splits, windows, evaluation batches and persisted
candidate lists) that also encodes, once per (encoder, texts) and cached under
``<cache_dir>/<dataset>/text_vectors/``:

- ``item_text``  [num_items + 1, E]: item text (title + categories/genres + brand + year) of every item;
- ``user_text``  [num_users + 1, E]: the encoded rationale of each user, from a rationale export (the student's
  for SLIM, the teacher's for the "teacher rationales directly" variant); zero rows for users without one.

Rationales come from ``rdrec-generate`` exports, which are made from ``PreparedDataset.train_view()`` only, and
item text is item-level: nothing here reaches a validation or test interaction. A module reads the tables in
its ``setup()`` through ``self.trainer.datamodule``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from rdrec.data.datamodule import SeqRecDataModule
from rdrec.methods.slim.texts import ITEM_FIELDS, encode_cached, item_texts, load_rationales, rationale_table

log = logging.getLogger(__name__)


class SlimRecDataModule(SeqRecDataModule):
    def __init__(self, *args, encoder: Callable | None = None, rationales: str | None = None,
                 rationale_step: str = "all", unparsed_rationales: bool = False, item_text: bool = True,
                 item_fields=ITEM_FIELDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_factory, self.rationales = encoder, rationales
        self.rationale_step, self.use_item_text, self.item_fields = str(rationale_step), item_text, tuple(item_fields)
        self.unparsed_rationales = unparsed_rationales
        self.user_text: torch.Tensor | None = None
        self.item_text: torch.Tensor | None = None
        self.user_texts: list[str] = []  # the texts behind the tables (a trainable encoder re-encodes them)
        self.item_texts: list[str] = []
        self.coverage: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.item_text is not None:
            return
        needs_encoder = self.use_item_text or self.rationales
        encoder = self._encoder() if needs_encoder and self.encoder_factory is not None else None
        if needs_encoder and encoder is None:
            raise ValueError("data.encoder is null, but item text or rationales (data.rationales) are to be encoded")
        dim = encoder.dim if encoder is not None else 1
        cache = self.cache_dir / self.dataset.name / "text_vectors"
        if self.use_item_text:
            self.item_texts = item_texts(self.train_view, self.item_fields)
            self.item_text = encode_cached(encoder, self.item_texts, cache, desc="item text")
        else:
            self.item_text = torch.zeros(self.num_items + 1, dim)
        if self.rationales:
            rationales = load_rationales(self.rationales, self.dataset, self.rationale_step, self.unparsed_rationales)
            self.user_texts = rationale_table(rationales, self.num_users)
            self.user_text = encode_cached(encoder, self.user_texts, cache, desc="rationales")
            covered = sum(bool(t.strip()) for t in self.user_texts)
        else:
            self.user_text, covered = torch.zeros(self.num_users + 1, dim), 0
        self.coverage = {"users_with_rationale": covered, "user_coverage": covered / max(self.num_users, 1)}
        print(f"slim: item text {'on' if self.use_item_text else 'off'}; rationales for {covered}/{self.num_users} "
              f"users ({self.coverage['user_coverage']:.1%}) from {self.rationales or 'nowhere'} "
              f"(step {self.rationale_step})", flush=True)

    def build_encoder(self):
        """A fresh encoder (for a module that fine-tunes it)."""
        return self._encoder(fresh=True)

    def _encoder(self, fresh: bool = False):
        encoder = self.encoder_factory
        if encoder is None:
            raise ValueError("data.encoder: SLIM needs a text encoder for item text or rationales")
        if callable(encoder) and not hasattr(encoder, "encode"):
            if fresh or not hasattr(self, "_built_encoder"):
                self._built_encoder = encoder()
            return self._built_encoder
        return encoder

    @property
    def text_dim(self) -> int:
        return int(self.item_text.size(1))
