"""Candidate lists: exclusion of every interacted item, determinism, strategies, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rdrec.data.candidates as cand
from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.split import SplitConfig, prepare


def make_prepared(n_users=40, n_items=60, length=8, seed=0, fingerprint="f" * 64):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        # skewed item choice so popularity differs a lot between items
        items = rng.choice(n_items, size=length, replace=False, p=_zipf(n_items))
        rows += [(f"u{u}", f"i{i}", float(t)) for t, i in enumerate(items)]
    p = prepare(CanonicalDataset("cands", None, None, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])),
                SplitConfig(seed=seed))
    p.fingerprint = fingerprint
    return p


def _zipf(n):
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


@pytest.fixture(scope="module")
def prepared():
    return make_prepared()


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
@pytest.mark.parametrize("stage", ["valid", "test"])
def test_negatives_exclude_every_interacted_item(prepared, stage, strategy):
    neg = cand.sample_negatives(prepared, stage, 10, strategy, seed=0)
    view = prepared.eval_view(stage)
    assert neg.shape == (len(view.users), 10)
    everything = prepared.all_items_per_user()
    counts = prepared.train_view().item_counts
    for u, row, target, hist in zip(view.users, neg, view.targets, view.histories):
        assert len(set(row.tolist())) == 10  # without replacement
        assert target not in row and not set(hist.tolist()) & set(row.tolist())
        assert not set(everything[u].tolist()) & set(row.tolist())  # not even the later (test) item
        assert row.min() >= 1 and row.max() <= prepared.num_items
        if strategy == "popularity":
            assert (counts[row] > 0).all()


def test_same_seed_same_lists_other_seed_other_lists(prepared):
    a = cand.sampled_candidates(prepared, "test", 20, "uniform", seed=1)
    b = cand.sampled_candidates(prepared, "test", 20, "uniform", seed=1)
    c = cand.sampled_candidates(prepared, "test", 20, "uniform", seed=2)
    assert np.array_equal(a.candidates, b.candidates)
    assert not np.array_equal(a.candidates, c.candidates)
    # valid and test are independent draws
    v = cand.sampled_candidates(prepared, "valid", 20, "uniform", seed=1)
    assert not np.array_equal(a.candidates[:, 1:], v.candidates[:, 1:])
    # same seed, fewer negatives: a prefix of the longer list
    short = cand.sample_negatives(prepared, "test", 7, "uniform", seed=1)
    assert np.array_equal(short, a.candidates[:, 1:8])


def test_sampled_candidates_put_the_positive_first(prepared):
    lists = cand.sampled_candidates(prepared, "valid", 15, "popularity", seed=0)
    view = prepared.eval_view("valid")
    assert np.array_equal(lists.users, view.users)
    assert lists.candidates.shape == (len(view.users), 16)
    assert np.array_equal(lists.candidates[:, 0], view.targets)
    assert (lists.target_index == 0).all()


def test_shown_candidates_are_shuffled_and_point_at_the_positive(prepared):
    lists = cand.shown_candidates(prepared, "test", 5, "uniform", seed=0)
    view = prepared.eval_view("test")
    assert lists.candidates.shape == (len(view.users), 5)
    rows = np.arange(len(view.users))
    assert np.array_equal(lists.candidates[rows, lists.target_index], view.targets)
    assert len(set(lists.target_index.tolist())) > 1  # the positive's slot varies
    again = cand.shown_candidates(prepared, "test", 5, "uniform", seed=0)
    assert np.array_equal(lists.candidates, again.candidates)
    # the shown set is the positive plus the negatives of the same seed
    neg = cand.sample_negatives(prepared, "test", 4, "uniform", seed=0)
    for shown, target, n in zip(lists.candidates, view.targets, neg):
        assert sorted(shown.tolist()) == sorted([target, *n.tolist()])


def test_popularity_favours_popular_items_and_never_draws_unseen_ones():
    # "hot" is a train item of every second user, "cold" of one user; "ghost" is only ever a test item, so it
    # has no train count and popularity must never draw it (nor any other item never seen in training).
    rows = []
    for u in range(200):
        seq = ["hot" if u % 2 == 0 else f"a{u}", "cold" if u == 1 else f"b{u}", f"valid{u}", "ghost" if u == 0 else f"test{u}"]
        rows += [(f"u{u}", i, float(t)) for t, i in enumerate(seq)]
    p = prepare(CanonicalDataset("pop", None, None, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])),
                SplitConfig())
    iid = dict(zip(p.items["item_id"], p.items["item"]))
    counts = p.train_view().item_counts
    assert counts[iid["ghost"]] == 0 and counts[iid["hot"]] == 100 and counts[iid["cold"]] == 1
    neg = cand.sample_negatives(p, "test", 5, "popularity", seed=0)
    drawn = np.bincount(neg.ravel(), minlength=p.num_items + 1)
    assert drawn[counts == 0].sum() == 0
    assert drawn[iid["hot"]] > 5 * max(drawn[iid["cold"]], 1)
    uniform = np.bincount(cand.sample_negatives(p, "test", 5, "uniform", seed=0).ravel(), minlength=p.num_items + 1)
    assert uniform[counts == 0].sum() > 0  # uniform does draw never-trained items
    assert drawn[iid["hot"]] > 3 * uniform[iid["hot"]]


def test_too_few_eligible_items_is_an_error(prepared):
    with pytest.raises(DataError, match="eligible"):
        cand.sample_negatives(prepared, "test", prepared.num_items, "uniform", seed=0)


def test_bad_arguments(prepared):
    with pytest.raises(DataError, match="strategy"):
        cand.sample_negatives(prepared, "test", 5, "zipf", seed=0)
    with pytest.raises(DataError, match="stage"):
        cand.sample_negatives(prepared, "train", 5, "uniform", seed=0)


def test_load_or_create_persists_and_does_not_redraw(tmp_path, prepared, monkeypatch):
    first = cand.load_or_create(tmp_path, "sampled", prepared, "test", 12, "popularity", 3)
    files = list((tmp_path / "candidates").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and prepared.fingerprint[:16] in files[0].name

    def no_drawing(*a, **k):
        raise AssertionError("should load, not draw")

    monkeypatch.setattr(cand, "sample_negatives", no_drawing)
    second = cand.load_or_create(tmp_path, "sampled", prepared, "test", 12, "popularity", 3)
    for field in ("users", "candidates", "target_index"):
        assert np.array_equal(getattr(first, field), getattr(second, field))
    # another key (kind, size, seed, stage, dataset) draws again
    for args in (("shown", prepared, "test", 12, "popularity", 3), ("sampled", prepared, "test", 12, "popularity", 4),
                 ("sampled", prepared, "valid", 12, "popularity", 3)):
        with pytest.raises(AssertionError, match="should load"):
            cand.load_or_create(tmp_path, *args)
    other = make_prepared(fingerprint="0" * 64)
    with pytest.raises(AssertionError, match="should load"):
        cand.load_or_create(tmp_path, "sampled", other, "test", 12, "popularity", 3)
    assert not [f for f in (tmp_path / "candidates").iterdir() if f.name.startswith(".")]  # no temp files


def test_load_or_create_needs_a_fingerprint(tmp_path):
    p = make_prepared(fingerprint="")
    with pytest.raises(DataError, match="fingerprint"):
        cand.load_or_create(tmp_path, "sampled", p, "test", 5, "uniform", 0)
