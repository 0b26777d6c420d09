"""Distillation pairs for SLIM's student: (simplified prompt → teacher rationale), from a rationale export.

The teacher's export (``rdrec-generate``, table ``slim_users``) holds, per user, the ``student_prompt`` (the
user's training history without instructions, rendered from ``PreparedDataset.train_view()`` only) and the
teacher's three-step ``rationale``. Users are split once, seeded, into ``train`` / ``valid`` / ``heldout``
(``split_users``): the student learns from ``train`` (at most ``max_samples`` of them: the paper's "amount of
distillation data"), early-stops on ``valid`` and is compared with the teacher on ``heldout``, which it never
trained on.

Batches are text: ``{"user": [B], "prompt": [str], "target": [str]}``; the student module tokenises them (it
owns the tokenizer and the prompt format).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from rdrec.data.batches import Rows
from rdrec.data.datamodule import SeqRecDataModule
from rdrec.methods.slim.texts import STEPS
from rdrec.teacher.export import load_checked


def split_users(users, valid: int, heldout: int, seed: int) -> dict[str, list[int]]:
    """Seeded split of ``users`` into train / valid / heldout (sizes ``valid`` and ``heldout``; the rest train).
    Depends only on the set of users and the seed, not on their order."""
    users = sorted(int(u) for u in users)
    if valid + heldout >= len(users):
        raise ValueError(f"{len(users)} users with teacher rationales: too few for {valid} valid + {heldout} held-out "
                         "users and at least one to train on")
    perm = np.random.default_rng(seed).permutation(len(users))
    picked = [users[i] for i in perm]
    return {"heldout": sorted(picked[:heldout]), "valid": sorted(picked[heldout:heldout + valid]),
            "train": picked[heldout + valid:]}  # train keeps the permuted order: max_samples takes a random subset


class DistillPairs(Rows):
    """(user, simplified prompt, teacher rationale) rows."""

    @staticmethod
    def collate(rows: list[dict]) -> dict:
        return {"user": torch.tensor([r["user"] for r in rows], dtype=torch.long),
                "prompt": [r["prompt"] for r in rows], "target": [r["target"] for r in rows]}


class SlimDistillDataModule(SeqRecDataModule):
    """``teacher``: the export directory. ``max_samples``: distillation pairs used for training (None: all)."""

    def __init__(self, *args, teacher: str, max_samples: int | None = None, valid_users: int = 8,
                 heldout_users: int = 20, split_seed: int = 0, target_step: str = "all", **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.max_samples = teacher, max_samples
        self.valid_users, self.heldout_users, self.split_seed = valid_users, heldout_users, split_seed
        if str(target_step) not in STEPS:
            raise ValueError(f"data.target_step: expected one of {sorted(STEPS)}, got {target_step!r}")
        self.target_column = STEPS[str(target_step)]
        self.pairs: dict[str, DistillPairs] = {}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.pairs:
            return
        table = load_checked(self.teacher, self.dataset.fingerprint)[0]["slim_users"]
        rows = {int(r["user"]): {"user": int(r["user"]), "prompt": r["student_prompt"], "target": r[self.target_column]}
                for r in table}
        self.user_split = split_users(rows, self.valid_users, self.heldout_users, self.split_seed)
        train = self.user_split["train"][: self.max_samples] if self.max_samples else self.user_split["train"]
        self.pairs = {"train": DistillPairs([rows[u] for u in train]),
                      "valid": DistillPairs([rows[u] for u in self.user_split["valid"]]),
                      "test": DistillPairs([rows[u] for u in self.user_split["heldout"]])}
        print(f"slim student: {len(self.pairs['train'])} distillation pairs (of {len(self.user_split['train'])} available), "
              f"{len(self.pairs['valid'])} validation and {len(self.pairs['test'])} held-out users", flush=True)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(self, part: str, shuffle: bool = False) -> DataLoader:
        data = self.pairs[part]
        size = self.batch_size if part == "train" else self.eval_batch_size
        sampler = self.order.sampler_for(data, size) if shuffle else None  # shuffled, resumable (rdrec.data.order)
        return DataLoader(data, batch_size=size, sampler=sampler, collate_fn=data.collate, num_workers=self.num_workers)
