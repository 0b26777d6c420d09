"""Torch datasets and collation for sequential recommendation batches.

Training batches come only from ``PreparedDataset.train_view()``; evaluation batches only from
``eval_view(stage)``. Keys (all LongTensors):

* train: ``user`` [B], ``items`` [B, L] — the user's last ≤ L training items, left-padded with 0 so the most
  recent item is in the last column;
* eval: ``user`` [B], ``history`` [B, L] (left-padded, most recent last), ``target`` [B], ``seen`` [B, S] (every
  item before the target, right-padded with 0, for seen-item exclusion) and, per candidate list ``name``,
  ``{name}_candidates`` [B, C] and ``{name}_target_index`` [B].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def left_pad(seqs: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """Last ``length`` items of each sequence, right-aligned, 0 in front."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return torch.from_numpy(out)


def right_pad(seqs: Sequence[np.ndarray]) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), max(width, 1)), dtype=np.int64)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = seq
    return torch.from_numpy(out)


class TrainSequences(Dataset):
    """One example per user with at least one training item."""

    def __init__(self, sequences: list[np.ndarray], max_len: int):
        self.users = np.array([u for u, seq in enumerate(sequences) if len(seq)], dtype=np.int64)
        self.sequences, self.max_len = sequences, max_len

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> int:
        return int(self.users[index])

    def collate(self, users: list[int]) -> dict[str, torch.Tensor]:
        return {
            "user": torch.tensor(users, dtype=torch.long),
            "items": left_pad([self.sequences[u] for u in users], self.max_len),
        }


class EvalExamples(Dataset):
    """One example per evaluated user: history, target, seen items and the persisted candidate lists."""

    def __init__(self, view, candidate_lists: dict, max_len: int):
        self.view, self.max_len = view, max_len
        self.candidate_lists = candidate_lists
        for name, lists in candidate_lists.items():
            if not np.array_equal(lists.users, view.users):
                raise ValueError(f"candidate list '{name}' is not aligned with the evaluated users")

    def __len__(self) -> int:
        return len(self.view.users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        v = self.view
        batch = {
            "user": torch.from_numpy(v.users[rows].astype(np.int64)),
            "history": left_pad([v.histories[r] for r in rows], self.max_len),
            "target": torch.from_numpy(v.targets[rows].astype(np.int64)),
            "seen": right_pad([v.seen[r] for r in rows]),
        }
        for name, lists in self.candidate_lists.items():
            batch[f"{name}_candidates"] = torch.from_numpy(lists.candidates[rows].astype(np.int64))
            batch[f"{name}_target_index"] = torch.from_numpy(lists.target_index[rows].astype(np.int64))
        return batch
