"""Exports parse back to exactly the prepared split (CSV, Parquet, RecBole atomic + benchmark files)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from rdrec.data.canonical import CanonicalDataset
from rdrec.data.export import export
from rdrec.data.split import SplitConfig, prepare


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(12):
        for t in range(int(rng.integers(3, 9))):
            review = None if t % 3 == 0 else f"review\twith tab {u}-{t}"
            rows.append((f"user {u}", f"item{rng.integers(15)}", float(t), float(rng.integers(1, 6)), review))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "review"])
    items = pd.DataFrame({
        "item_id": [f"item{i}" for i in range(15)],
        "title": [f'Title "{i}"\nsecond line' for i in range(15)],
        "categories": [["Beauty", "Skin Care"] if i % 2 else [] for i in range(15)],
        "brand": ["Acme Co" if i % 3 else None for i in range(15)],
        "year": [2000 + i if i % 4 else None for i in range(15)],
    })
    users = pd.DataFrame({"user_id": [f"user {u}" for u in range(12)], "gender": ["F" if u % 2 else "M" for u in range(12)]})
    return prepare(CanonicalDataset("toy", users, items, inter), SplitConfig(seed=5))


def test_csv_and_parquet_round_trip(tmp_path, prepared):
    out = export(prepared, tmp_path, formats=("csv", "parquet"))
    assert set(out) == {"csv", "parquet"}
    inter_csv = pd.read_csv(tmp_path / "csv" / "interactions.csv", dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    inter_pq = pd.read_parquet(tmp_path / "parquet" / "interactions.parquet")
    for inter in (inter_csv, inter_pq):
        assert len(inter) == len(prepared.interactions)
        assert list(inter["split"]) == list(prepared.interactions["split"])
        assert np.array_equal(inter["user"], prepared.interactions["user"])
        assert np.array_equal(inter["item"], prepared.interactions["item"])
        # original ids line up with the remapped ones
        users = dict(zip(prepared.users["user"], prepared.users["user_id"]))
        items = dict(zip(prepared.items["item"], prepared.items["item_id"]))
        assert list(inter["user_id"]) == [users[u] for u in inter["user"]]
        assert list(inter["item_id"]) == [items[i] for i in inter["item"]]
    review = prepared.interactions["review"]
    assert inter_pq["review"].isna().tolist() == review.isna().tolist()  # pandas may read missing as NaN
    assert inter_pq["review"].dropna().tolist() == review.dropna().tolist()
    items_csv = pd.read_csv(tmp_path / "csv" / "items.csv", keep_default_na=False)
    assert len(items_csv) == prepared.num_items
    assert [json.loads(c) for c in items_csv["categories"]] == list(prepared.items["categories"])
    assert list(items_csv["title"]) == list(prepared.items["title"])
    items_pq = pd.read_parquet(tmp_path / "parquet" / "items.parquet")
    assert [list(c) for c in items_pq["categories"]] == list(prepared.items["categories"])
    assert len(pd.read_csv(tmp_path / "csv" / "users.csv")) == prepared.num_users
    assert len(pd.read_parquet(tmp_path / "parquet" / "users.parquet")) == prepared.num_users


def read_atomic(path):
    """Read a RecBole atomic file the way RecBole 1.2.1 does: tab-separated, header `name:type`."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def test_recbole_files_reproduce_the_split(tmp_path, prepared):
    out = export(prepared, tmp_path, formats=["recbole"], max_len=3)
    d = out["recbole"]
    assert d == tmp_path / "recbole" / "toy"
    inter = read_atomic(d / "toy.inter")
    assert len(inter) == len(prepared.interactions)
    assert open(d / "toy.inter").readline().strip().split("\t") == [
        "user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert list(inter["user_id"].astype(int)) == list(prepared.interactions["user"])
    assert list(inter["item_id"].astype(int)) == list(prepared.interactions["item"])
    items = read_atomic(d / "toy.item")
    assert len(items) == prepared.num_items and "\n" not in "".join(items["title"])
    assert set(items["categories"]) == {"", "Beauty Skin_Care"}
    assert len(read_atomic(d / "toy.user")) == prepared.num_users

    n_users = prepared.num_users
    train, valid, test = (read_atomic(d / f"toy.{s}.inter") for s in ("train", "valid", "test"))
    assert len(valid) == len(test) == n_users
    # one train row per train interaction after the user's first
    assert len(train) == (prepared.interactions["split"] == "train").sum() - n_users
    for stage, frame in (("valid", valid), ("test", test)):
        view = prepared.eval_view(stage)
        assert np.array_equal(frame["user_id"].astype(int), view.users)
        assert np.array_equal(frame["item_id"].astype(int), view.targets)
        lists = [[int(x) for x in s.split()] for s in frame["item_id_list"]]
        assert lists == [h[-3:].tolist() for h in view.histories]  # the most recent max_len items
    tv = prepared.train_view()
    expected = [
        (u, seq[p], seq[max(0, p - 3):p].tolist()) for u, seq in enumerate(tv.sequences) for p in range(1, len(seq))
    ]
    got = [(int(u), int(i), [int(x) for x in s.split()]) for u, i, s in zip(train["user_id"], train["item_id"], train["item_id_list"])]
    assert got == expected
    assert all(s for s in train["item_id_list"])  # never an empty history

    cfg = yaml.safe_load((d / "toy.yaml").read_text())
    assert cfg["benchmark_filename"] == ["train", "valid", "test"]
    assert cfg["dataset"] == "toy" and cfg["data_path"] == str(tmp_path / "recbole")
    assert cfg["alias_of_item_id"] == ["item_id_list"] and cfg["MAX_ITEM_LIST_LENGTH"] == 3
    assert "item_id_list" in cfg["load_col"]["inter"] and cfg["eval_args"]["order"] == "TO"


def test_export_is_atomic_and_replaces(tmp_path, prepared, monkeypatch):
    export(prepared, tmp_path, formats=["csv"])
    before = (tmp_path / "csv" / "interactions.csv").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        export(prepared, tmp_path, formats=["csv", "parquet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv"]  # no parquet dir, no temp dir
    assert (tmp_path / "csv" / "interactions.csv").read_text() == before
    with pytest.raises(ValueError, match="unknown format"):
        export(prepared, tmp_path, formats=["xlsx"])
