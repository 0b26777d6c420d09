"""The prepared dataset: remapped ids, time-ordered interactions with their leave-one-out split.

Leakage is prevented by construction: training code receives data only through :meth:`train_view`, which
is built from train interactions alone (no valid/test item, position or review can be reached from it);
evaluation code receives :meth:`eval_view`. Neither view shares memory with the tables (they are copies),
so nothing written into a view can change what the other sees.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_dir
from rdrec.utils.integrity import verify_dir

STAGES = ("train", "valid", "test")
TABLES = ("users", "items", "interactions")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainView:
    sequences: list[np.ndarray]  # index = user id; [0] is empty; each user's train items in time order
    reviews: pd.DataFrame  # user, item, timestamp, rating, review of train interactions that have a review
    item_counts: np.ndarray  # [num_items + 1] train popularity; [0] = 0
    num_users: int
    num_items: int
    items: pd.DataFrame  # item-level text (title, categories, …) is not interaction text, so it is allowed


@dataclass(frozen=True)
class EvalView:
    stage: str
    users: np.ndarray  # [U] user ids, ascending
    histories: list[np.ndarray]  # valid: train items; test: train + valid items (time order)
    targets: np.ndarray  # [U] the held-out item
    seen: list[np.ndarray]  # items excluded under the `full` protocol (= histories)
    references: pd.DataFrame  # user, item, timestamp, rating, review of the targets (text-task evaluation only)


@dataclass
class PreparedDataset:
    name: str
    users: pd.DataFrame  # user (1..N), user_id (source id), attributes
    items: pd.DataFrame  # item (1..M), item_id, title, categories, brand, description, year
    interactions: pd.DataFrame  # user, item, timestamp, rating, review, position, split; sorted (user, position)
    fingerprint: str = ""  # set by the pipeline; keys persisted candidate lists

    def __post_init__(self) -> None:
        self.users, self.items, self.interactions = _normalise(self.users, self.items, self.interactions)
        _check(self)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    # ---- views -----------------------------------------------------------------------------------------------
    def train_view(self) -> TrainView:
        train = self.interactions[self.interactions["split"].to_numpy() == "train"]
        users, items = train["user"].to_numpy(), train["item"].to_numpy()
        with_review = train[train["review"].notna().to_numpy()]
        return TrainView(
            sequences=_per_user(users, items, self.num_users),
            reviews=with_review[["user", "item", "timestamp", "rating", "review"]].reset_index(drop=True).copy(),
            item_counts=np.bincount(items, minlength=self.num_items + 1).astype(np.int64),
            num_users=self.num_users,
            num_items=self.num_items,
            items=self.items.copy(deep=True),
        )

    def eval_view(self, stage: str) -> EvalView:
        if stage not in ("valid", "test"):
            raise ValueError(f"eval_view(stage): expected 'valid' or 'test', got {stage!r}")
        split = self.interactions["split"].to_numpy()
        target_rows = self.interactions[split == stage]
        users = target_rows["user"].to_numpy().copy()
        history_splits = ("train",) if stage == "valid" else ("train", "valid")
        hist = self.interactions[np.isin(split, history_splits)]
        per_user = _per_user(hist["user"].to_numpy(), hist["item"].to_numpy(), self.num_users)
        histories = [per_user[u] for u in users]
        return EvalView(
            stage=stage,
            users=users,
            histories=histories,
            targets=target_rows["item"].to_numpy().copy(),
            seen=[h.copy() for h in histories],
            references=target_rows[["user", "item", "timestamp", "rating", "review"]].reset_index(drop=True).copy(),
        )

    def stage_users(self, stage: str) -> np.ndarray:
        """The users evaluated at ``stage`` (= ``eval_view(stage).users``) without building histories."""
        return self.interactions.loc[self.interactions["split"].to_numpy() == stage, "user"].to_numpy()

    def all_items_per_user(self) -> list[np.ndarray]:
        """Every item each user interacted with in any split (index = user id). For evaluation code only:
        negatives for candidate lists must avoid these."""
        return _per_user(self.interactions["user"].to_numpy(), self.interactions["item"].to_numpy(), self.num_users)

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically and sealed: a temp dir beside ``path`` with a checksum manifest written last, renamed
        into place, so no partial cache is left and a damaged one is found on load."""
        path = Path(path)
        with atomic_dir(path, seal=True) as tmp, _quiet_datasets():
            for table in TABLES:
                frame = getattr(self, table)
                datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp / table))
            meta = {"format_version": FORMAT_VERSION, "name": self.name, "fingerprint": self.fingerprint}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "PreparedDataset":
        """Raises ``CorruptError`` when a file differs from its checksum (or the manifest is missing)."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError("not a prepared dataset (no meta.json); delete it to rebuild", path=path)
        verify_dir(path)
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                "prepared dataset written by another rdrec version; delete it to rebuild",
                path=path, field="format_version", expected=str(FORMAT_VERSION), got=meta.get("format_version"),
            )
        with _quiet_datasets():
            tables = {t: datasets.load_from_disk(str(path / t)).to_pandas() for t in TABLES}
        return cls(meta["name"], tables["users"], tables["items"], tables["interactions"], meta["fingerprint"])

    # ---- statistics --------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        lengths = np.bincount(self.interactions["user"].to_numpy(), minlength=self.num_users + 1)[1:]
        n_inter = len(self.interactions)
        out = {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": n_inter,
            "density": n_inter / max(self.num_users * self.num_items, 1),
        }
        counts = self.interactions["split"].value_counts()
        for stage in STAGES:
            out[f"{stage}_interactions"] = int(counts.get(stage, 0))
        out["reviews"] = int(self.interactions["review"].notna().sum())
        if len(lengths):
            for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
                out[f"seq_len_q{int(q * 100)}"] = float(np.quantile(lengths, q))
            out["seq_len_mean"] = float(lengths.mean())
        return out


# ---- helpers ---------------------------------------------------------------------------------------------------
def _per_user(users: np.ndarray, items: np.ndarray, num_users: int) -> list[np.ndarray]:
    """Split ``items`` (rows sorted by user, then time) into one array per user id 0..num_users."""
    counts = np.bincount(users, minlength=num_users + 1)
    return [a.copy() for a in np.split(items.astype(np.int64), np.cumsum(counts)[:-1])]


def _normalise(users: pd.DataFrame, items: pd.DataFrame, inter: pd.DataFrame):
    """One set of dtypes, whether the tables come from ``prepare`` or from Arrow on disk, so a saved and
    reloaded dataset compares equal to the original."""
    users = users.sort_values("user", kind="stable").reset_index(drop=True)
    users["user"] = users["user"].astype(np.int64)
    for col in users.columns.drop("user"):
        users[col] = users[col].fillna("").astype(str)

    items = items.sort_values("item", kind="stable").reset_index(drop=True)
    items["item"] = items["item"].astype(np.int64)
    for col in ("item_id", "title", "brand", "description"):
        items[col] = items[col].fillna("").astype(str) if col in items else ""
    cats = items["categories"] if "categories" in items else [None] * len(items)
    items["categories"] = [[str(c) for c in v] if isinstance(v, (list, tuple, np.ndarray)) else [] for v in cats]
    year = items["year"] if "year" in items else pd.Series([pd.NA] * len(items))
    items["year"] = pd.to_numeric(year, errors="coerce").astype("Int64")
    extra = [c for c in items.columns if c not in ("item", "item_id", "title", "categories", "brand", "description", "year")]
    items = items[["item", "item_id", "title", "categories", "brand", "description", "year", *extra]]

    inter = inter[["user", "item", "timestamp", "rating", "review", "position", "split"]].copy()
    for col in ("user", "item", "position"):
        inter[col] = inter[col].astype(np.int64)
    inter["timestamp"] = inter["timestamp"].astype(np.float64)
    inter["rating"] = inter["rating"].astype(np.float32)
    review = inter["review"].astype(object)
    inter["review"] = review.where(review.notna(), None)
    inter["split"] = inter["split"].astype(str)
    order = np.lexsort((inter["position"].to_numpy(), inter["user"].to_numpy()))
    inter = inter.iloc[order].reset_index(drop=True)
    return users, items, inter


def _check(ds: PreparedDataset) -> None:
    """The invariants every consumer relies on (ids 1..N with 0 free for padding; valid split labels)."""
    for table, col in ((ds.users, "user"), (ds.items, "item")):
        if not np.array_equal(table[col].to_numpy(), np.arange(1, len(table) + 1)):
            raise DataError(f"dataset '{ds.name}': {col} ids must be 1..{len(table)} without gaps")
    inter = ds.interactions
    bad = ~inter["split"].isin(STAGES)
    if bad.any():
        raise DataError(f"dataset '{ds.name}'", field="split", expected="train/valid/test", got=inter["split"][bad].iloc[0])
    for col, n in (("user", ds.num_users), ("item", ds.num_items)):
        values = inter[col].to_numpy()
        if len(values) and (values.min() < 1 or values.max() > n):
            raise DataError(f"dataset '{ds.name}': interaction {col} ids outside 1..{n}")


@contextmanager
def _quiet_datasets():
    """🤗 datasets prints a progress bar per table; restore whatever the caller had afterwards."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
