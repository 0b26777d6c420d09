"""Item→next-item transition counts over training sequences, kept sparse (an Amazon category has ~10⁴ items)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch


class TransitionCounts:
    """``counts[a, b]`` = how often item ``b`` directly followed item ``a`` in the given sequences.

    ``scores(last)`` returns, for each row's last item, the counts of every item (column 0 = padding, never
    scored) plus the item's popularity scaled below one, so popularity only orders items with equal counts.
    """

    def __init__(self, sequences: Sequence[np.ndarray], num_items: int):
        pairs = [(s[:-1], s[1:]) for s in sequences if len(s) > 1]
        rows = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, dtype=np.int64)
        cols = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, dtype=np.int64)
        shape = (num_items + 1, num_items + 1)
        self.counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
        popularity = np.bincount(np.concatenate([np.asarray(s) for s in sequences] or [np.zeros(0, int)]),
                                 minlength=num_items + 1).astype(np.float32)
        popularity[0] = 0.0
        self.tie_break = popularity / (popularity.max() + 1.0)  # in [0, 1): below any difference of one count

    def scores(self, last: torch.Tensor) -> torch.Tensor:
        """``[B, num_items + 1]`` scores for a batch of last items (0 = empty history: popularity alone)."""
        rows = self.counts[last.cpu().numpy()].toarray() + self.tie_break
        rows[:, 0] = -np.inf
        return torch.from_numpy(rows).to(last.device)
