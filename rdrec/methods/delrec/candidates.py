"""DELRec's candidate lists: the SR model's top items plus random items, shuffled per seed, persisted.

A list of size K holds the positive, the first ``n_sr`` items of the SR model's top-k that are not the positive,
and K-1-n_sr uniform random items; the order is a seeded shuffle. The composition is the same whether or not
the SR model ranked the positive highly, so the list itself reveals nothing about the answer.

Evaluation lists (kind ``sr_topk``) are drawn once per (dataset fingerprint, stage, K, n_sr, SR top-k file, seed)
and stored beside the shared ones (``<cache>/candidates/``), in the same format, so every method (the SR model
alone, DELRec and each ablation) ranks exactly the same lists through ``rdrec.eval.protocols.CandidateRanking``.
Like the shared negatives, no item the user interacted with (other than the positive) is ever a candidate.

Training lists are built the same way from the training view only (never touching validation or test items).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdrec.data.candidates import CandidateLists, _seed_sequence, _targets, cached_lists, sample_negatives
from rdrec.errors import DataError
from rdrec.data.prepared import PreparedDataset
from rdrec.utils.integrity import sha256_file

KIND = "sr_topk"


def compose(positive: int, sr_top: np.ndarray, pool: np.ndarray, k: int, n_sr: int, banned: set) -> list[int]:
    """[positive, ≤n_sr SR items, random items from ``pool``] of length ``k`` (unshuffled), no duplicates."""
    out, used = [int(positive)], {int(positive)}
    for item in sr_top:
        if len(out) > n_sr:
            break
        item = int(item)
        if item > 0 and item not in used and item not in banned:
            out.append(item)
            used.add(item)
    for item in pool:
        if len(out) >= k:
            break
        item = int(item)
        if item > 0 and item not in used and item not in banned:
            out.append(item)
            used.add(item)
    if len(out) < k:
        raise DataError(f"only {len(out)} distinct eligible candidates for positive {positive}", field="k",
                        expected=f"at most {len(out)}", got=k)
    return out


def sr_candidate_lists(prepared: PreparedDataset, stage: str, topk: np.ndarray, k: int, n_sr: int, seed: int) -> CandidateLists:
    if not 0 <= n_sr < k:
        raise DataError(field="n_sr", expected=f"0 ≤ n_sr < k = {k}", got=n_sr)
    users, targets = prepared.stage_users(stage), _targets(prepared, stage)
    if len(topk) != len(users):
        raise DataError(f"{len(topk)} SR top-k rows for {len(users)} users at stage '{stage}'")
    interacted = prepared.all_items_per_user()
    pools = sample_negatives(prepared, stage, k, "uniform", seed)  # never an interacted item
    rng = np.random.default_rng(_seed_sequence(seed, stage, "delrec-order"))
    candidates = np.empty((len(users), k), dtype=np.int64)
    target_index = np.empty(len(users), dtype=np.int64)
    for row, (user, target) in enumerate(zip(users, targets)):
        banned = set(interacted[user].tolist()) - {int(target)}
        ordered = np.asarray(compose(target, topk[row], pools[row], k, n_sr, banned))
        perm = rng.permutation(k)
        candidates[row] = ordered[perm]
        target_index[row] = int(np.argmax(perm == 0))
    return CandidateLists(users, candidates, target_index)


def load_or_create_sr_lists(cache_dir: str | Path, prepared: PreparedDataset, stage: str, topk_file: str | Path,
                            topk: np.ndarray, k: int, n_sr: int, seed: int) -> CandidateLists:
    digest = sha256_file(Path(topk_file))
    meta = {"kind": KIND, "stage": stage, "size": int(k), "strategy": f"sr{n_sr}-{digest[:16]}", "seed": int(seed),
            "fingerprint": prepared.fingerprint}
    path = Path(cache_dir) / "candidates" / (
        f"{prepared.name}-{prepared.fingerprint[:16]}-{stage}-{KIND}{k}-sr{n_sr}-{digest[:12]}-seed{seed}.npz"
    )
    return cached_lists(path, meta, prepared, stage, lambda: sr_candidate_lists(prepared, stage, topk, k, n_sr, seed))


def training_candidates(positive: int, sr_top: np.ndarray, banned: set, k: int, n_sr: int, num_items: int,
                        rng: np.random.Generator) -> tuple[list[int], int]:
    """A shuffled training list and the positive's index; random items are drawn uniformly from 1..num_items."""
    pool = rng.integers(1, num_items + 1, size=4 * k + len(banned))  # duplicates are skipped by compose
    ordered = compose(positive, sr_top, pool, k, n_sr, banned - {int(positive)})
    perm = rng.permutation(k)
    return [ordered[i] for i in perm], int(np.argmax(perm == 0))
