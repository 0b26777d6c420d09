"""Batches for SLIM's recommenders: the usual sequential batches plus the text vectors of users and items.

``SlimRecDataModule`` is a ``SeqRecDataModule`` (same splits, windows, evaluation batches and persisted
candidate lists) that also encodes, once per (encoder, texts) and cached under
``<cache_dir>/<dataset>/text_vectors/``:

- ``item_text``  [num_items + 1, E]: item text (title + categories/genres + brand + year) of every item;
- the rationales of ``rationales`` (one rationale export, or a list of them: the student's for SLIM, the
  teacher's for the "teacher rationales directly" variant): ``rationale_text`` [R + 1, E] (row 0 zero) and, per
  user, ``rationale_rows`` / ``rationale_ends`` [num_users + 1, K]: which rows are the user's rationales and
  where in the user's training sequence the history each was written from ends (``rdrec/methods/slim/windows.py``);
  ``user_text`` [num_users + 1, E] is each user's latest rationale (what validation/test see).

Training batches carry ``end`` [B] besides ``user`` and ``items``: where each window ends (exclusive) in the
user's training sequence, so the model fuses a rationale only at targets after its window (the leak rule,
``rdrec/methods/slim/fusion.py``). Rationales come from ``rdrec-generate`` exports, which are made from
``PreparedDataset.train_view()`` only, and item text is item-level: nothing here reaches a validation or test
interaction. A module reads the tables in its ``setup()`` through ``self.trainer.datamodule``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from rdrec.data.batches import TrainSequences
from rdrec.data.datamodule import SeqRecDataModule
from rdrec.methods.slim.fusion import UNKNOWN_END
from rdrec.methods.slim.texts import ITEM_FIELDS, encode_cached, item_texts, load_rationales
from rdrec.methods.slim.windows import window_ends
from rdrec.teacher.export import load_checked

log = logging.getLogger(__name__)


class WindowedTrainSequences(TrainSequences):
    """``TrainSequences`` whose batches also carry ``end`` [B]: each window's end in its user's training sequence."""

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        batch = super().collate(rows)
        batch["end"] = torch.from_numpy(self.ends[rows])
        return batch


class SlimRecDataModule(SeqRecDataModule):
    def __init__(self, *args, encoder: Callable | None = None, rationales: str | list[str] | None = None,
                 rationale_step: str = "all", unparsed_rationales: bool = False, item_text: bool = True,
                 item_fields=ITEM_FIELDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_factory, self.rationales = encoder, rationales
        self.rationale_step, self.use_item_text, self.item_fields = str(rationale_step), item_text, tuple(item_fields)
        self.unparsed_rationales = unparsed_rationales
        self.user_text: torch.Tensor | None = None
        self.item_text: torch.Tensor | None = None
        self.rationale_text: torch.Tensor | None = None
        self.rationale_rows: torch.Tensor | None = None
        self.rationale_ends: torch.Tensor | None = None
        self.rationale_texts: list[str] = []  # the texts behind the tables (a trainable encoder re-encodes them)
        self.user_texts: list[str] = []
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
        entries = []  # (user, window end, text)
        for export in self._exports():
            loaded = load_checked(export, self.dataset.fingerprint)  # read once, for the texts and their windows
            texts = load_rationales(export, self.dataset, self.rationale_step, self.unparsed_rationales, loaded)
            texts = {u: t for u, t in texts.items() if t.strip()}
            ends = window_ends(export, self.train_view.sequences, texts, loaded)
            entries += [(u, ends[u], texts[u]) for u in sorted(texts)]
        self.rationale_texts = ["", *(t for _, _, t in entries)]
        self.rationale_text = (encode_cached(encoder, self.rationale_texts, cache, desc="rationales") if entries
                               else torch.zeros(1, dim))
        per_user: dict[int, list[tuple[int, int]]] = {}
        for row, (user, end, _) in enumerate(entries, start=1):
            per_user.setdefault(user, []).append((end, row))
        width = max((len(v) for v in per_user.values()), default=1)
        self.rationale_rows = torch.zeros(self.num_users + 1, width, dtype=torch.long)
        self.rationale_ends = torch.full((self.num_users + 1, width), UNKNOWN_END, dtype=torch.long)
        for user, slots in per_user.items():
            slots.sort()
            self.rationale_rows[user, :len(slots)] = torch.tensor([r for _, r in slots])
            self.rationale_ends[user, :len(slots)] = torch.tensor([e for e, _ in slots])
        latest = self.rationale_rows.gather(1, ((self.rationale_rows > 0).sum(1, keepdim=True) - 1).clamp(min=0))
        self.user_text = self.rationale_text[latest.squeeze(1)]
        self.user_texts = [self.rationale_texts[r] for r in latest.squeeze(1).tolist()]
        covered = len(per_user)
        lengths = [len(s) for s in self.train_view.sequences]
        # training targets (indices 1..n-1) at or after the user's earliest window end
        trained = sum(max(0, len(self.train_view.sequences[u]) - max(slots[0][0], 1)) for u, slots in per_user.items())
        self.coverage = {"users_with_rationale": covered, "user_coverage": covered / max(self.num_users, 1),
                         "train_targets_with_rationale": trained / max(sum(max(n - 1, 0) for n in lengths), 1)}
        print(f"slim: item text {'on' if self.use_item_text else 'off'}; rationales for {covered}/{self.num_users} "
              f"users ({self.coverage['user_coverage']:.1%}) from {self.rationales or 'nowhere'} "
              f"(step {self.rationale_step}); {self.coverage['train_targets_with_rationale']:.1%} of the training "
              "targets lie after a rationale's window", flush=True)
        if entries and not trained:
            log.warning("no training target lies after any rationale's window: the user-side fusion is never trained, "
                        "and at evaluation the rationales pass through its initial weights; add an export written "
                        "from a prefix (rdrec/methods/slim/windows.py)")

    def _exports(self) -> list[str]:
        if not self.rationales:
            return []
        if isinstance(self.rationales, (str, bytes)) or hasattr(self.rationales, "__fspath__"):
            return [str(self.rationales)]
        return [str(r) for r in self.rationales]

    def train_dataloader(self) -> DataLoader:
        data = WindowedTrainSequences(self.train_view.sequences, self.max_len, self.train_stride)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, collate_fn=data.collate,
                          num_workers=self.num_workers)

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
