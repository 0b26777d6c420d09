"""Steam (SASRec's Steam.txt, LLaRA's frames) and the seeded synthetic source."""

from __future__ import annotations

import pandas as pd
import pytest

from rdrec.errors import DataError
from rdrec.data.sources.steam import SteamLLaRA, SteamSASRec
from rdrec.data.sources.synthetic import Synthetic


# ---- SASRec Steam.txt ----------------------------------------------------------------------------------------
def test_steam_sasrec_positions_per_user(tmp_path):
    path = tmp_path / "Steam.txt"
    path.write_text("1 10\n1 11\n2 10\n1 12\n2 13\n", encoding="utf-8")
    ds = SteamSASRec(str(path)).load()
    inter = ds.interactions
    assert ds.name == "steam"
    assert inter[["user_id", "item_id"]].values.tolist() == [["1", "10"], ["1", "11"], ["2", "10"], ["1", "12"], ["2", "13"]]
    assert inter["timestamp"].tolist() == [0.0, 1.0, 0.0, 2.0, 1.0]


@pytest.mark.parametrize("line, field", [("1 10 5", None), ("1 x", "item"), ("u 3", "user")])
def test_steam_sasrec_bad_line(tmp_path, line, field):
    path = tmp_path / "Steam.txt"
    path.write_text(f"1 10\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        SteamSASRec(str(path)).load()
    msg = str(err.value)
    assert "Steam.txt:2" in msg
    assert (f"field '{field}'" in msg and "integer index" in msg) if field else "2 fields 'user item'" in msg


def test_steam_sasrec_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        SteamSASRec(str(tmp_path / "Steam.txt")).files()
    assert "Steam.txt" in str(err.value) and "no such file" in str(err.value)


# ---- LLaRA frames -----------------------------------------------------------------------------------------
def write_llara(root, rows):
    (root / "id2name.txt").write_text(
        "0::Dota 2\n1::Team Fortress 2\n2::Half-Life: Source\n3::Warhammer 40,000:: Dawn of War\n", encoding="utf-8")
    # LLaRA pads seq to 10 with padding id = number of games (4 here, 3581 in the real Steam release)
    frame = pd.DataFrame({
        "seq": [s + [4] * (10 - len(s)) for s, _ in rows],
        "len_seq": [len(s) for s, _ in rows],
        "next": [n for _, n in rows],
    })
    frame.to_pickle(root / "Test_data.df")


def test_steam_llara_rows_become_sequences(tmp_path):
    write_llara(tmp_path, [([0, 1, 2], 3), ([2, 0], 1)])
    ds = SteamLLaRA(str(tmp_path), trust_pickles=True).load()
    inter = ds.interactions
    assert inter["user_id"].unique().tolist() == ["Test_data.df:0", "Test_data.df:1"]
    assert inter["item_id"].tolist() == ["0", "1", "2", "3", "2", "0", "1"]
    assert inter["timestamp"].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0]
    titles = ds.items.set_index("item_id")["title"]
    assert titles["3"] == "Warhammer 40,000:: Dawn of War"  # only the first '::' separates


def test_steam_llara_unknown_game(tmp_path):
    write_llara(tmp_path, [([0, 1], 7)])
    with pytest.raises(DataError) as err:
        SteamLLaRA(str(tmp_path), trust_pickles=True).load()
    msg = str(err.value)
    assert "Test_data.df[row 0]" in msg and "field 'next'" in msg and "id2name.txt" in msg and "7" in msg


def test_steam_llara_bad_id2name(tmp_path):
    write_llara(tmp_path, [([0], 1)])
    (tmp_path / "id2name.txt").write_text("0::Dota 2\nTeam Fortress 2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        SteamLLaRA(str(tmp_path), trust_pickles=True).load()
    assert "id2name.txt:2" in str(err.value) and "'id::title'" in str(err.value)


# ---- synthetic ------------------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_seed_dependent():
    a, b = Synthetic(seed=3).load(), Synthetic(seed=3).load()
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    c = Synthetic(seed=4).load()
    assert not a.interactions["item_id"].equals(c.interactions["item_id"])
    assert Synthetic().files() == []
    assert Synthetic(seed=3).config() != Synthetic(seed=4).config()


def test_synthetic_shape_and_text():
    src = Synthetic(num_users=30, num_items=25, min_len=4, max_len=9, seed=1)
    ds = src.load()
    inter = ds.interactions
    lengths = inter.groupby("user_id").size()
    assert len(lengths) == 30 and lengths.between(4, 9).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()  # no repeats within a user
    assert (inter.groupby("user_id", sort=False)["timestamp"].diff().dropna() > 0).all()  # no ties by default
    assert set(inter["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    titles = ds.items.set_index("item_id")["title"]
    assert titles.is_unique and (titles != "").all() and (ds.items["brand"] != "").all()
    assert all(len(c) == 2 for c in ds.items["categories"])
    # each review names its item's title (leakage tests rely on this)
    assert all(titles[i] in r for i, r in zip(inter["item_id"], inter["review"]))
    assert Synthetic(with_reviews=False).load().interactions["review"].isna().all()


def test_synthetic_ties():
    inter = Synthetic(ties=True).load().interactions
    gaps = inter.groupby("user_id", sort=False)["timestamp"].diff().dropna()
    assert (gaps == 0).any() and (gaps >= 0).all()


def test_synthetic_has_learnable_sequential_structure():
    """The in-cluster successor rule makes 'next = successor(previous)' far more frequent than chance."""
    src = Synthetic(num_users=200, num_items=40, seed=0)
    ds = src.load()
    members = {}
    for item, cats in zip(ds.items["item_id"], ds.items["categories"]):
        members.setdefault(tuple(cats), []).append(item)
    successor = {m[k]: m[(k + 1) % len(m)] for m in members.values() for k in range(len(m))}
    inter = ds.interactions
    prev = inter.groupby("user_id", sort=False)["item_id"].shift()
    pairs = [(p, n) for p, n in zip(prev, inter["item_id"]) if isinstance(p, str)]
    hit = sum(successor[p] == n for p, n in pairs) / len(pairs)
    assert hit > 0.3  # chance is about 1/40


def test_synthetic_rejects_impossible_lengths():
    with pytest.raises(ValueError, match="max_len <= num_items"):
        Synthetic(num_items=5, max_len=10)
