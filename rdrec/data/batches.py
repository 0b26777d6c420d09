"""Torch datasets and collation for sequential recommendation batches.

Training batches come only from ``PreparedDataset.train_view()``; evaluation batches only from
``eval_view(stage)``. Keys (all LongTensors):

* train: ``user`` [B], ``items`` [B, L + 1] — a window of the user's training items, left-padded with 0 so the
  most recent item is in the last column (inputs are the first L columns, next-item targets the last L);
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


class Rows(Dataset):
    """A dataset over a list of already-built examples (dicts); subclasses say how to ``collate`` them."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


class TrainSequences(Dataset):
    """Training windows of up to ``max_len + 1`` items cut from the end of each user's training sequence.

    Consecutive windows share one item, so with ``stride=None`` (one window per user: the most recent, as in
    the SASRec paper) only the last ``max_len`` items are targets, and with ``stride=max_len`` every training
    interaction after the first is a target exactly once per epoch, in the context of up to ``max_len`` items.
    """

    def __init__(self, sequences: list[np.ndarray], max_len: int, stride: int | None = None):
        self.sequences, self.max_len = sequences, max_len
        users, ends = [], []
        for user, seq in enumerate(sequences):
            n = len(seq)
            if n < 2:  # a single item predicts nothing
                continue
            window_ends = range(n, 1, -stride) if stride else (n,)
            users += [user] * len(window_ends)
            ends += list(window_ends)
        self.users, self.ends = np.array(users, dtype=np.int64), np.array(ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        users, ends = self.users[rows], self.ends[rows]
        windows = [self.sequences[u][max(0, e - self.max_len - 1) : e] for u, e in zip(users, ends)]
        return {"user": torch.from_numpy(users), "items": left_pad(windows, self.max_len + 1)}


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
