"""What chance gives: the exact expected metrics of a uniformly random order, for the reference row of every table.

A random order puts each user's target at every rank among that user's ``n`` candidates with probability ``1/n``,
so HR@k = min(k, n) / n and NDCG@k = (sum of 1/log2(r + 1) for r = 1 … min(k, n)) / n, averaged over users. Under
full ranking with seen items excluded ``n`` is the number of items the user has not interacted with before the
evaluated target; under sampled ranking it is the list's length (the target and its negatives). The expectation
is exact (no draw), so the row has no seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def random_order_expectation(list_sizes: Sequence[int] | np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> dict[str, float]:
    """``{"hr@k", "ndcg@k"}``: the expected HR@k and NDCG@k of a random order, averaged over users whose target is
    one of ``list_sizes[u]`` candidates."""
    sizes = np.asarray(list_sizes, dtype=np.int64)
    if sizes.size == 0 or (sizes < 1).any():
        raise ValueError("random_order_expectation: every user needs at least one candidate (the target)")
    ks = sorted(set(int(k) for k in ks))
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))])  # cum[m]: DCG of ranks 1..m
    out = {}
    for k in ks:
        top = np.minimum(k, sizes)
        out[f"hr@{k}"] = float(np.mean(top / sizes))
        out[f"ndcg@{k}"] = float(np.mean(cum[top] / sizes))
    return out


def random_order_metrics(prepared, stage: str = "test", ks: Iterable[int] = (5, 10, 20),
                         num_negatives: int = 100) -> dict[str, float]:
    """The random-order row for ``prepared`` (a ``PreparedDataset``) in the metric names runs write:
    ``<stage>/hr@k`` (full ranking, seen items excluded) and ``<stage>/sampled/hr@k`` (the target and
    ``num_negatives`` sampled items)."""
    view = prepared.eval_view(stage)
    full = [prepared.num_items - len(set(np.asarray(h).tolist())) for h in view.histories]
    out = {f"{stage}/{k}": v for k, v in random_order_expectation(full, ks).items()}
    sampled = random_order_expectation(np.full(len(full), num_negatives + 1), ks)
    out.update({f"{stage}/sampled/{k}": v for k, v in sampled.items()})
    return out
