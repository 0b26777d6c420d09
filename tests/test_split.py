"""prepare(): filtering, time order with ties, id remapping, leave-one-out, leak-free views, persistence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.prepared import EvalView, PreparedDataset, TrainView
from rdrec.data.split import SplitConfig, prepare


def canonical(rows, items=None, users=None, name="hand") -> CanonicalDataset:
    """rows: (user_id, item_id, timestamp[, review]) in source order."""
    cols = ["user_id", "item_id", "timestamp", "review"][: len(rows[0])]
    return CanonicalDataset(name, users, items, pd.DataFrame(rows, columns=cols))


def sequences_by_original_id(p: PreparedDataset) -> dict[str, list[str]]:
    item_ids = p.items.set_index("item")["item_id"]
    user_ids = p.users.set_index("user")["user_id"]
    return {
        user_ids[u]: [item_ids[i] for i in g["item"]]
        for u, g in p.interactions.groupby("user", sort=True)
    }


# ---- order, ties, leave-one-out -------------------------------------------------------------------------------
def test_ties_broken_by_original_row_order():
    # Three items share t=5 for user a; their source order is c, a, b (not alphabetical, not by item id).
    rows = [("a", "c", 5), ("a", "x", 1), ("a", "a", 5), ("a", "b", 5), ("a", "z", 9)]
    p = prepare(canonical(rows), SplitConfig(seed=3))
    assert sequences_by_original_id(p)["a"] == ["x", "c", "a", "b", "z"]


def test_leave_one_out_on_hand_made_dataset():
    rows = [
        ("u1", "i1", 1), ("u2", "i3", 2), ("u1", "i2", 3), ("u1", "i3", 4), ("u2", "i1", 5),
        ("u1", "i4", 6), ("u2", "i4", 7), ("u3", "i1", 1),  # u3 has one interaction: dropped
    ]
    p = prepare(canonical(rows), SplitConfig(seed=1))
    assert p.num_users == 2 and p.num_items == 4
    inter = p.interactions
    uid = dict(zip(p.users["user_id"], p.users["user"]))
    iid = dict(zip(p.items["item_id"], p.items["item"]))
    u1 = inter[inter["user"] == uid["u1"]]
    assert list(u1["item"]) == [iid[i] for i in ("i1", "i2", "i3", "i4")]
    assert list(u1["split"]) == ["train", "train", "valid", "test"]
    assert list(u1["position"]) == [0, 1, 2, 3]
    u2 = inter[inter["user"] == uid["u2"]]
    assert list(u2["split"]) == ["train", "valid", "test"]
    # sorted by (user, position); ids 1..N / 1..M
    assert list(inter["user"]) == sorted(inter["user"])
    assert sorted(p.users["user"]) == [1, 2] and list(p.items["item"]) == [1, 2, 3, 4]

    valid, test = p.eval_view("valid"), p.eval_view("test")
    row = list(valid.users).index(uid["u1"])
    assert list(valid.histories[row]) == [iid["i1"], iid["i2"]] and valid.targets[row] == iid["i3"]
    assert list(test.histories[row]) == [iid["i1"], iid["i2"], iid["i3"]] and test.targets[row] == iid["i4"]
    assert [list(s) for s in test.seen] == [list(h) for h in test.histories]
    tv = p.train_view()
    assert len(tv.sequences) == 3 and len(tv.sequences[0]) == 0
    assert list(tv.sequences[uid["u1"]]) == [iid["i1"], iid["i2"]]
    assert list(tv.sequences[uid["u2"]]) == [iid["i3"]]
    counts = np.zeros(5, dtype=np.int64)
    counts[[iid["i1"], iid["i2"], iid["i3"]]] = 1
    assert np.array_equal(tv.item_counts, counts)


def test_item_and_user_tables_follow_the_new_ids():
    items = pd.DataFrame({"item_id": ["i1", "i2", "i9"], "title": ["One", "Two", "Nine"], "categories": [["A", "B"], [], ["C"]]})
    users = pd.DataFrame({"user_id": ["u1"], "age": ["30"]})
    p = prepare(canonical([("u1", "i1", 1), ("u1", "i2", 2), ("u1", "i1", 3)], items, users), SplitConfig())
    assert p.num_items == 2  # i9 never interacted: not in the prepared dataset
    titles = dict(zip(p.items["item_id"], p.items["title"]))
    assert titles == {"i1": "One", "i2": "Two"}
    cats = dict(zip(p.items["item_id"], p.items["categories"]))
    assert cats == {"i1": ["A", "B"], "i2": []}
    assert list(p.users["age"]) == ["30"]
    # a repeated item stays in the sequence
    assert sequences_by_original_id(p)["u1"] == ["i1", "i2", "i1"]


# ---- id mapping ------------------------------------------------------------------------------------------------
def random_rows(n_users=30, n_items=25, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"u{u}", f"i{rng.integers(n_items)}", float(t)) for u in range(n_users) for t in range(length)]


def id_maps(p):
    return dict(zip(p.users["user_id"], p.users["user"])), dict(zip(p.items["item_id"], p.items["item"]))


def test_random_mapping_is_a_seeded_permutation():
    data = canonical(random_rows())
    a, b, c = (prepare(data, SplitConfig(seed=s)) for s in (7, 7, 8))
    ua, ia = id_maps(a)
    assert id_maps(b) == (ua, ia)  # same seed, same map
    uc, ic = id_maps(c)
    assert ua != uc and ia != ic  # another seed, another map
    assert sorted(ua.values()) == list(range(1, len(ua) + 1))
    assert sorted(ia.values()) == list(range(1, len(ia) + 1))
    # a permutation: not the sorted-id or first-appearance numbering
    assert [ua[u] for u in sorted(ua)] != sorted(ua.values())
    # the map depends on the ids and the seed, not on the row order of the source
    shuffled = canonical(random_rows()[::-1])
    assert id_maps(prepare(shuffled, SplitConfig(seed=7))) == (ua, ia)
    # the remapped dataset describes the same sequences
    assert sequences_by_original_id(a) == sequences_by_original_id(c)


def test_sequential_mapping_reproduces_p5_numbering():
    # Source order: bob appears first, then amy. Times interleave across users.
    rows = [
        ("bob", "shoe", 10), ("amy", "hat", 1), ("bob", "sock", 5), ("amy", "shoe", 2),
        ("bob", "hat", 20), ("amy", "belt", 3), ("amy", "sock", 4),
    ]
    p = prepare(canonical(rows), SplitConfig(id_mapping="sequential"))
    users, items = id_maps(p)
    # P5/S3-Rec: users numbered by first appearance in the source; items by first appearance walking
    # user 1's time-ordered sequence (bob: sock, shoe, hat), then user 2's (amy: hat, shoe, belt, sock).
    assert users == {"bob": 1, "amy": 2}
    assert items == {"sock": 1, "shoe": 2, "hat": 3, "belt": 4}
    assert p.train_view().sequences[1].tolist() == [1]  # bob: sock | shoe (valid) | hat (test)


def test_unknown_id_mapping_is_an_error():
    with pytest.raises(DataError, match="id_mapping"):
        prepare(canonical(random_rows()), SplitConfig(id_mapping="alphabetical"))


# ---- filters -----------------------------------------------------------------------------------------------------
def test_k_core_is_iterative():
    # 3-core. Item z has 3 interactions, but one is from user c, who has only 2 interactions; dropping c
    # leaves z with 2, and dropping z leaves user b with 2 -> b goes too. A single pass would keep z and b.
    rows = [
        *[("a", i, t) for t, i in enumerate(["x", "y", "w", "z"])],
        *[("b", i, t) for t, i in enumerate(["x", "y", "z"])],
        *[("c", i, t) for t, i in enumerate(["z", "q"])],
        *[("d", i, t) for t, i in enumerate(["x", "y", "w"])],
        *[("e", i, t) for t, i in enumerate(["x", "y", "w"])],
    ]
    p = prepare(canonical(rows), SplitConfig(user_core=3, item_core=3))
    users, items = id_maps(p)
    assert set(users) == {"a", "d", "e"}
    assert set(items) == {"x", "y", "w"}
    counts_u = p.interactions.groupby("user").size()
    counts_i = p.interactions.groupby("item").size()
    assert counts_u.min() >= 3 and counts_i.min() >= 3


def test_min_user_interactions_and_min_rating():
    rows = pd.DataFrame(
        [("a", "x", 1, 5.0), ("a", "y", 2, 1.0), ("a", "z", 3, 4.0), ("a", "w", 4, 5.0), ("b", "x", 1, 5.0),
         ("b", "y", 2, 5.0), ("b", "z", 3, 5.0)],
        columns=["user_id", "item_id", "timestamp", "rating"],
    )
    data = CanonicalDataset("r", None, None, rows)
    assert prepare(data, SplitConfig()).num_users == 2
    p = prepare(data, SplitConfig(min_rating=4.0))
    assert sequences_by_original_id(p) == {"a": ["x", "z", "w"], "b": ["x", "y", "z"]}
    p = prepare(data, SplitConfig(min_user_interactions=4))
    assert list(p.users["user_id"]) == ["a"]
    with pytest.raises(DataError, match="min_user_interactions"):
        SplitConfig(min_user_interactions=2).validate()


def test_empty_after_filter_names_the_filter_and_the_numbers():
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2)]
    with pytest.raises(DataError) as err:
        prepare(canonical(rows), SplitConfig())
    msg = str(err.value)
    assert "min_user_interactions=3" in msg and "'hand'" in msg
    assert "2 users, 2 items, 4 interactions" in msg and "after: 0" in msg
    with pytest.raises(DataError, match=r"k-core \(user_core=0, item_core=5\).*before: 2 users"):
        prepare(canonical(rows), SplitConfig(item_core=5))
    rated = CanonicalDataset("r", None, None, pd.DataFrame(
        {"user_id": ["a"] * 3, "item_id": ["x", "y", "z"], "timestamp": [1, 2, 3], "rating": [1.0, 2.0, 2.0]}))
    with pytest.raises(DataError, match=r"min_rating=4.0 left no interactions \(before: 1 users, 3 items"):
        prepare(rated, SplitConfig(min_rating=4.0))


# ---- no leakage ----------------------------------------------------------------------------------------------------
def _walk(obj):
    """Every scalar value reachable from a view (arrays, frames, lists, dataclasses)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name))
    elif isinstance(obj, pd.DataFrame):
        yield from obj.columns
        for col in obj.columns:
            yield from _walk(list(obj[col]))
    elif isinstance(obj, np.ndarray):
        yield from _walk(obj.tolist())
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def test_no_valid_or_test_interaction_or_review_reachable_from_train_view():
    # Each user's last two items are unique to that user ("markers"); every review names its item's title
    # and carries a marker string for its split.
    rows, items = [], []
    for u in range(6):
        for t in range(5):
            item = f"shared{t}" if t < 3 else f"marker_u{u}_{t}"
            kind = "train" if t < 3 else ("VALIDTEXT" if t == 3 else "TESTTEXT")
            rows.append((f"u{u}", item, float(t), f"I liked the Title of {item} {kind}-{u}"))
    for i in {r[1] for r in rows}:
        items.append({"item_id": i, "title": f"Title of {i}"})
    p = prepare(canonical(rows, pd.DataFrame(items)), SplitConfig(seed=0))
    tv = p.train_view()
    assert isinstance(tv, TrainView)
    iid = dict(zip(p.items["item_id"], p.items["item"]))
    uid = dict(zip(p.users["user_id"], p.users["user"]))
    for u in range(6):
        held_out = {iid[f"marker_u{u}_3"], iid[f"marker_u{u}_4"]}
        assert not held_out & set(tv.sequences[uid[f"u{u}"]].tolist())
        # no label/position in any train sequence is a valid/test item of anyone
    all_held = {iid[i] for i in iid if i.startswith("marker")}
    assert not all_held & {i for s in tv.sequences for i in s.tolist()}
    assert tv.item_counts[sorted(all_held)].sum() == 0
    assert set(tv.reviews["item"]) <= {iid[f"shared{t}"] for t in range(3)}
    # walk every field: no valid/test review text anywhere
    values = list(_walk(tv))
    texts = [v for v in values if isinstance(v, str)]
    assert not [s for s in texts if "VALIDTEXT" in s or "TESTTEXT" in s]
    assert any("train-" in s for s in texts)  # train reviews are there (the walk does reach them)
    # the item table is allowed (item-level text), and does contain the marker titles
    assert any("Title of marker_u0_4" in s for s in texts)
    # eval views do carry the references
    ev = p.eval_view("test")
    assert isinstance(ev, EvalView)
    assert all("TESTTEXT" in r for r in ev.references["review"])
    assert all("VALIDTEXT" in r for r in p.eval_view("valid").references["review"])
    # valid history contains no valid/test item; test history no test item
    v = p.eval_view("valid")
    for h, target in zip(v.histories, v.targets):
        assert target not in h and not all_held & set(h.tolist())


def test_views_are_copies():
    p = prepare(canonical(random_rows()), SplitConfig())
    before = p.interactions.copy()
    tv = p.train_view()
    tv.sequences[1][:] = 0
    tv.reviews.loc[:, "item"] = 0
    tv.item_counts[:] = -1
    ev = p.eval_view("test")
    ev.histories[0][:] = 0
    pd.testing.assert_frame_equal(p.interactions, before)


# ---- persistence and stats ----------------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path):
    rows = [("u1", "i1", 1.5, "good"), ("u1", "i2", 2.0, None), ("u1", "i3", 3.0, "bad"), ("u2", "i2", 1.0, None),
            ("u2", "i3", 2.0, "ok"), ("u2", "i1", 3.0, None)]
    items = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["One", "Two"], "categories": [["A", "B"], []],
                          "year": [2001, None], "brand": ["Acme", None]})
    users = pd.DataFrame({"user_id": ["u1", "u2"], "gender": ["F", None]})
    p = prepare(canonical(rows, items, users), SplitConfig(seed=4))
    p.fingerprint = "abc123"
    p.save(tmp_path / "prep")
    q = PreparedDataset.load(tmp_path / "prep")
    assert (q.name, q.fingerprint, q.num_users, q.num_items) == ("hand", "abc123", 2, 3)
    for table in ("users", "items", "interactions"):
        pd.testing.assert_frame_equal(getattr(q, table), getattr(p, table))
    assert q.items["categories"].tolist() == p.items["categories"].tolist()
    assert sum(r is None for r in q.interactions["review"]) == 3  # missing reviews stay None, not NaN
    # overwriting works and leaves no temp dirs
    p.save(tmp_path / "prep")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["prep"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    p = prepare(canonical(random_rows()), SplitConfig())
    import datasets

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", boom)
    with pytest.raises(OSError):
        p.save(tmp_path / "prep")
    assert list(tmp_path.iterdir()) == []


def test_stats():
    p = prepare(canonical(random_rows(n_users=10, length=6)), SplitConfig())
    s = p.stats()
    assert s["users"] == 10 and s["interactions"] == 60
    assert s["train_interactions"] == 40 and s["valid_interactions"] == 10 and s["test_interactions"] == 10
    assert s["seq_len_q50"] == 6.0 and s["density"] == pytest.approx(60 / (10 * p.num_items))


def test_synthetic_source_end_to_end_without_leakage():
    from rdrec.data.sources.synthetic import Synthetic

    canon = Synthetic(num_users=30, num_items=25, ties=True).load()
    p = prepare(canon, SplitConfig(seed=0))
    assert p.num_users == 30 and (p.interactions.groupby("user")["split"].apply(list).map(lambda s: s[-2:]) == pd.Series(
        [["valid", "test"]] * 30, index=range(1, 31))).all()
    held_out = p.interactions[p.interactions["split"] != "train"]
    tv = p.train_view()
    pairs = set(zip(tv.reviews["user"], tv.reviews["item"], tv.reviews["timestamp"]))
    assert not pairs & set(zip(held_out["user"], held_out["item"], held_out["timestamp"]))
    for u, seq in enumerate(tv.sequences[1:], start=1):
        mine = held_out[held_out["user"] == u]
        # synthetic users never repeat an item, so no held-out item may appear in the train sequence
        assert not set(mine["item"]) & set(seq.tolist())
    # each sequence equals the source's order: ties keep the row order of the source
    by_source = canon.interactions.groupby("user_id", sort=False)["item_id"].apply(list).to_dict()
    assert sequences_by_original_id(p) == by_source
