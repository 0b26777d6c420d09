"""The one canonical form every source is read into.

Three tables, all keyed by the source's own (string) ids:

* ``users``: ``user_id`` plus any string attributes the source has (age, gender, …);
* ``items``: ``item_id``, ``title``, ``categories`` (list of strings), ``brand``, ``description``, ``year``;
* ``interactions``: ``user_id``, ``item_id``, ``timestamp`` (float seconds; where a source has no time, the
  position in the user's time-ordered sequence), ``rating`` (float, NaN when absent) and ``review`` (string,
  None when absent).

Row order of ``interactions`` is the source's original order; the split breaks timestamp ties by it.
On disk each table is an Arrow dataset (🤗 ``datasets``); in memory a pandas DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_dir
from rdrec.utils.integrity import verify_dir

ITEM_TEXT_COLUMNS = ("title", "brand", "description")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "review")


@dataclass
class CanonicalDataset:
    name: str
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    # Optional source-specific extras, e.g. P5's published negative samples: {"negatives": DataFrame}.
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.users, self.items, self.interactions = normalise(self.users, self.items, self.interactions, self.name)

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically and sealed (a checksum manifest written last, checked by ``load``)."""
        with atomic_dir(path, seal=True) as tmp:
            for table_name, frame in self.tables().items():
                datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp / table_name))

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> "CanonicalDataset":
        """Raises ``CorruptError`` when a file differs from its checksum (or the manifest is missing)."""
        path = Path(path)
        verify_dir(path)
        tables = {p.name: datasets.load_from_disk(str(p)).to_pandas() for p in sorted(path.iterdir()) if p.is_dir()}
        extras = {k.removeprefix("extra_"): v for k, v in tables.items() if k.startswith("extra_")}
        return cls(name or path.name, tables["users"], tables["items"], tables["interactions"], extras)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"users": self.users, "items": self.items, "interactions": self.interactions}
        out.update({f"extra_{k}": v for k, v in self.extras.items()})
        return out

    # ---- statistics ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        n_users = self.interactions["user_id"].nunique()
        n_items = self.interactions["item_id"].nunique()
        n_inter = len(self.interactions)
        lengths = self.interactions.groupby("user_id", sort=False).size().to_numpy()
        out = {
            "users": int(n_users),
            "items": int(n_items),
            "interactions": int(n_inter),
            "density": n_inter / max(n_users * n_items, 1),
        }
        if len(lengths):
            for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
                out[f"seq_len_q{int(q * 100)}"] = float(np.quantile(lengths, q))
            out["seq_len_mean"] = float(lengths.mean())
        return out


def normalise(users: pd.DataFrame, items: pd.DataFrame, inter: pd.DataFrame, name: str):
    """Coerce dtypes, fill optional columns, and check the invariants every later stage relies on."""
    for col in ("user_id", "item_id", "timestamp"):
        if col not in inter.columns:
            raise DataError(f"dataset '{name}': interactions lack the column '{col}'")
    inter = inter.copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)
    inter["timestamp"] = inter["timestamp"].astype("float64")
    inter["rating"] = inter["rating"].astype("float32") if "rating" in inter else np.float32("nan")
    if "review" not in inter:
        inter["review"] = None
    inter["review"] = inter["review"].astype(object).where(inter["review"].notna(), None)
    inter = inter[list(INTERACTION_COLUMNS)].reset_index(drop=True)

    items = items.copy() if items is not None else pd.DataFrame({"item_id": []})
    items["item_id"] = items["item_id"].astype(str)
    for col in ITEM_TEXT_COLUMNS:
        items[col] = items[col].fillna("").astype(str) if col in items else ""
    if "categories" not in items:
        items["categories"] = [[] for _ in range(len(items))]
    items["categories"] = [list(c) if isinstance(c, (list, tuple, np.ndarray)) else [] for c in items["categories"]]
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype("Int64") if "year" in items else pd.array(
        [pd.NA] * len(items), dtype="Int64"
    )
    # Items that appear only in interactions still get a (text-less) row, so every id is known.
    missing = pd.Index(inter["item_id"].unique()).difference(items["item_id"])
    if len(missing):
        filler = pd.DataFrame({"item_id": missing, **{c: "" for c in ITEM_TEXT_COLUMNS}})
        filler["categories"] = [[] for _ in range(len(filler))]
        filler["year"] = pd.array([pd.NA] * len(filler), dtype="Int64")
        items = pd.concat([items, filler], ignore_index=True)
    items = items.drop_duplicates("item_id", keep="first").reset_index(drop=True)

    users = users.copy() if users is not None else pd.DataFrame({"user_id": []})
    users["user_id"] = users["user_id"].astype(str)
    missing = pd.Index(inter["user_id"].unique()).difference(users["user_id"])
    if len(missing):
        users = pd.concat([users, pd.DataFrame({"user_id": missing})], ignore_index=True)
    users = users.drop_duplicates("user_id", keep="first").reset_index(drop=True)
    for col in users.columns.drop("user_id"):
        users[col] = users[col].fillna("").astype(str)
    return users, items, inter
