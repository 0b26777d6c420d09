"""Candidate lists for the `sampled` and `candidates` protocols (docs/protocol.md).

Drawn once per (dataset fingerprint, stage, kind, size, strategy, seed) and persisted, so every method
ranks exactly the same lists. Negatives never include any item the user interacted with (in any split).

Sampling without replacement proportional to weights w uses the exponential race: draw E_i ~ Exp(1) per
item and keep the n smallest keys E_i / w_i (equivalent to Gumbel top-k on log w). It is one vectorised
pass over a [users × items] block, done in chunks of users to bound memory. Each row is ordered by key (the
order of successive draws), so with the same seed a smaller list is a prefix of a larger one (barring exact
float32 ties between keys).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdrec.errors import CorruptError, DataError
from rdrec.data.prepared import PreparedDataset
from rdrec.utils.atomic import atomic_file
from rdrec.utils.integrity import move_aside

log = logging.getLogger(__name__)

STRATEGIES = ("uniform", "popularity")
KINDS = ("sampled", "shown")
_BLOCK_CELLS = 1 << 22  # keys per chunk: 16 MiB of float32 (+ argpartition's int64 indices)


@dataclass
class CandidateLists:
    users: np.ndarray  # [U] row order = eval_view(stage).users
    candidates: np.ndarray  # [U, C] item ids
    target_index: np.ndarray  # [U] column of the positive in each row

    def __len__(self) -> int:
        return len(self.users)


def sample_negatives(prepared: PreparedDataset, stage: str, n: int, strategy: str, seed: int) -> np.ndarray:
    """[U, n] negatives per user of ``stage`` (rows in ``eval_view(stage).users`` order), without replacement."""
    _check_stage_strategy(stage, strategy)
    if n < 0:
        raise DataError(field="n", expected="a non-negative number of negatives", got=n)
    users = prepared.stage_users(stage)
    num_items = prepared.num_items
    if strategy == "uniform":
        weight = np.ones(num_items + 1, dtype=np.float32)
    else:
        weight = prepared.train_view().item_counts.astype(np.float32)  # zero-count items get weight 0: never drawn
    weight[0] = 0.0  # padding id
    with np.errstate(divide="ignore"):
        inv_weight = (1.0 / weight).astype(np.float32)  # inf where weight is 0

    interacted = prepared.all_items_per_user()
    rng = np.random.default_rng(_seed_sequence(seed, stage, "negatives", strategy))
    out = np.empty((len(users), n), dtype=np.int64)
    chunk = max(1, _BLOCK_CELLS // (num_items + 1))
    for start in range(0, len(users), chunk):
        block_users = users[start : start + chunk]
        keys = rng.standard_exponential((len(block_users), num_items + 1), dtype=np.float32)
        with np.errstate(invalid="ignore"):  # Exp draws of exactly 0 times inf: NaN, never drawn
            keys *= inv_weight
        # Mask every item each user touched (history, target and anything after it).
        seen = [interacted[u] for u in block_users]
        rows = np.repeat(np.arange(len(block_users)), [len(s) for s in seen])
        keys[rows, np.concatenate(seen)] = np.inf
        eligible = np.isfinite(keys).sum(axis=1)
        short = np.flatnonzero(eligible < n)
        if len(short):
            r = short[0]
            raise DataError(
                f"dataset '{prepared.name}', stage '{stage}': user {block_users[r]} has only {eligible[r]} items "
                f"eligible as {strategy} negatives; {len(short)} users in this block are short",
                field="n", expected=f"at most {eligible[r]}", got=n,
            )
        if n == 0:
            continue
        top = np.argpartition(keys, n - 1, axis=1)[:, :n] if n < keys.shape[1] else np.argsort(keys, axis=1)[:, :n]
        # Order each row by key: the order of successive draws, and independent of argpartition's internals.
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(keys, top, axis=1), axis=1, kind="stable"), axis=1)
        out[start : start + len(block_users)] = top
    return out


def sampled_candidates(prepared: PreparedDataset, stage: str, n: int, strategy: str, seed: int) -> CandidateLists:
    """The positive at column 0 followed by ``n`` negatives (metrics break ties pessimistically, so the
    positive's column does not matter)."""
    users = prepared.stage_users(stage)
    negatives = sample_negatives(prepared, stage, n, strategy, seed)
    candidates = np.concatenate([_targets(prepared, stage)[:, None], negatives], axis=1)
    return CandidateLists(users, candidates, np.zeros(len(users), dtype=np.int64))


def shown_candidates(prepared: PreparedDataset, stage: str, k: int, strategy: str, seed: int) -> CandidateLists:
    """``k`` candidates shown to an LLM: the positive and k-1 negatives in a seeded random order per row (an
    LLM is sensitive to position, so the positive must not always come first)."""
    if k < 1:
        raise DataError(field="k", expected="at least 1 shown candidate", got=k)
    users = prepared.stage_users(stage)
    negatives = sample_negatives(prepared, stage, k - 1, strategy, seed)
    ordered = np.concatenate([_targets(prepared, stage)[:, None], negatives], axis=1)
    rng = np.random.default_rng(_seed_sequence(seed, stage, "shown-order", strategy))
    perm = np.argsort(rng.random(ordered.shape), axis=1)
    candidates = np.take_along_axis(ordered, perm, axis=1)
    target_index = np.argmax(perm == 0, axis=1).astype(np.int64)
    return CandidateLists(users, candidates, target_index)


def load_or_create(
    cache_dir: str | Path,
    kind: str,
    prepared: PreparedDataset,
    stage: str,
    n_or_k: int,
    strategy: str,
    seed: int,
) -> CandidateLists:
    """Load the persisted lists for this key, or draw them and write them atomically (``atomic_file``)."""
    if kind not in KINDS:
        raise DataError(field="kind", expected=" or ".join(map(repr, KINDS)), got=kind)
    _check_stage_strategy(stage, strategy)
    if not prepared.fingerprint:
        # Without it, lists of different datasets/splits would share a file name.
        raise DataError(f"dataset '{prepared.name}' has no fingerprint; build it with rdrec.data.pipeline.prepare_dataset")
    meta = {
        "kind": kind, "stage": stage, "size": int(n_or_k), "strategy": strategy, "seed": int(seed),
        "fingerprint": prepared.fingerprint,
    }
    path = Path(cache_dir) / "candidates" / (
        f"{prepared.name}-{prepared.fingerprint[:16]}-{stage}-{kind}{n_or_k}-{strategy}-seed{seed}.npz"
    )
    draw = sampled_candidates if kind == "sampled" else shown_candidates
    return cached_lists(path, meta, prepared, stage, lambda: draw(prepared, stage, n_or_k, strategy, seed))


def cached_lists(path: Path, meta: dict, prepared: PreparedDataset, stage: str,
                 draw: Callable[[], CandidateLists]) -> CandidateLists:
    """The lists stored at ``path`` (checked against their checksum, ``meta`` and the stage's users), or ``draw()``
    written there. A file that fails its checksum is moved aside with one warning and drawn again."""
    if path.is_file():
        try:
            lists = _read(path, meta)
        except CorruptError as err:
            aside = move_aside(path)
            log.warning("candidate file %s is corrupt (%s); moved aside to %s, drawing again", path, err, aside.name)
        else:
            if not np.array_equal(lists.users, prepared.stage_users(stage)):
                raise DataError("candidate lists do not match the dataset's users; delete the file to redraw", path=path)
            return lists
    lists = draw()
    _write(path, lists, meta)
    return lists


# ---- helpers ----------------------------------------------------------------------------------------------------
def _targets(prepared: PreparedDataset, stage: str) -> np.ndarray:
    inter = prepared.interactions
    return inter.loc[inter["split"].to_numpy() == stage, "item"].to_numpy().astype(np.int64)


def _check_stage_strategy(stage: str, strategy: str) -> None:
    if stage not in ("valid", "test"):
        raise DataError(field="stage", expected="'valid' or 'test'", got=stage)
    if strategy not in STRATEGIES:
        raise DataError(field="strategy", expected=" or ".join(map(repr, STRATEGIES)), got=strategy)


def _seed_sequence(seed: int, *names: str) -> np.random.SeedSequence:
    # Separate, reproducible streams per purpose: valid and test lists are independent draws.
    return np.random.SeedSequence([int(seed), *(zlib.crc32(s.encode()) for s in names)])


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order: what the file holds."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write(path: Path, lists: CandidateLists, meta: dict) -> None:
    arrays = {"users": lists.users, "candidates": lists.candidates, "target_index": lists.target_index,
              **{f"meta_{k}": np.asarray(v) for k, v in meta.items()}}
    with atomic_file(path, "wb") as f:
        np.savez(f, checksum=np.asarray(_checksum(arrays)), **arrays)


def _read(path: Path, meta: dict) -> CandidateLists:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "checksum"}
            stored = data["checksum"].item() if "checksum" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated or mangled zip/npy
        raise CorruptError(path=path, expected="a readable .npz file", got=f"{type(err).__name__}: {err}") from None
    if stored is None:
        raise CorruptError(path=path, field="checksum", expected="a checksum written with the lists",
                           got="none (written by an older rdrec)")
    got = _checksum(arrays)
    if got != stored:
        raise CorruptError(path=path, field="checksum", expected=str(stored)[:16], got=got[:16])
    for key, expected in meta.items():
        value = arrays[f"meta_{key}"].item() if f"meta_{key}" in arrays else None
        if value != expected:
            raise DataError("candidate file belongs to another key; delete it", path=path, field=key,
                            expected=repr(expected), got=value)
    for name in ("users", "candidates", "target_index"):
        if name not in arrays:
            raise CorruptError(path=path, field=name, expected="this array in the file", got="absent")
    return CandidateLists(arrays["users"], arrays["candidates"], arrays["target_index"])
