"""What the datamodule serves: training batches hold training interactions only; eval batches are aligned."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.conftest import compose_cfg


def _datamodule(tmp_path, overrides):
    dm = instantiate(compose_cfg("train", tmp_path, overrides).data)
    dm.prepare_data()
    dm.setup()
    return dm


def _assert_training_side_is_leak_free(dm):
    inter = dm.dataset.interactions
    held_out = inter[inter["split"] != "train"]
    full = {u: g["item"].to_numpy() for u, g in inter.groupby("user")}
    # 1) every training window is a slice of the user's interactions before validation, and the windows'
    #    targets (all but each window's first item) cover each of those interactions exactly once
    targets: dict[int, list] = {}
    for batch in dm.train_dataloader():
        assert batch["items"].shape[1] == dm.max_len + 1
        for user, row in zip(batch["user"].tolist(), batch["items"].numpy()):
            served, train = row[row > 0], full[user][:-2]
            starts = [i for i in range(len(train) - len(served) + 1) if (train[i : i + len(served)] == served).all()]
            assert starts, f"user {user}: served window is not a slice of the training sequence"
            targets.setdefault(user, []).append((starts[-1] + 1, starts[-1] + len(served)))
    for user, spans in targets.items():
        covered = sorted(i for a, b in spans for i in range(a, b))
        assert covered == list(range(1, len(full[user]) - 2)), user
    # 2) no held-out review text anywhere in what training code can reach (templated synthetic reviews can
    #    repeat across users, so look for the texts that only held-out interactions have)
    view = dm.train_view
    train_texts = set(inter.loc[inter["split"] == "train", "review"].dropna())
    texts = [t for t in held_out["review"].dropna() if t and t not in train_texts]
    assert len(texts) > 0 or held_out["review"].isna().all()
    reachable = " ".join(view.reviews["review"].dropna()) + " ".join(map(str, view.items.to_numpy().ravel()))
    assert not any(t in reachable for t in texts)
    # 3) held-out (user, item) pairs are not among the training reviews or counts beyond train occurrences
    train_pairs = set(zip(view.reviews["user"], view.reviews["item"]))
    only_held_out = held_out[~held_out.set_index(["user", "item"]).index.isin(
        inter[inter["split"] == "train"].set_index(["user", "item"]).index)]
    assert not train_pairs & set(zip(only_held_out["user"], only_held_out["item"]))
    train_counts = np.bincount(inter.loc[inter["split"] == "train", "item"], minlength=dm.num_items + 1)
    np.testing.assert_array_equal(view.item_counts, train_counts)


def test_synthetic_training_batches_hold_no_validation_or_test_data(tmp_path):
    dm = _datamodule(tmp_path, ["data=synthetic"])
    assert dm.dataset.interactions["review"].notna().any()  # the check below has texts to look for
    _assert_training_side_is_leak_free(dm)


@pytest.mark.slow
def test_ml100k_training_batches_hold_no_validation_or_test_data(tmp_path, ml100k_root):
    dm = _datamodule(tmp_path, ["data=ml100k", f"data.source.root={ml100k_root}"])
    assert dm.num_users == 943 and dm.num_items == 1682
    _assert_training_side_is_leak_free(dm)


def test_eval_batches_carry_aligned_candidates(tmp_path):
    dm = _datamodule(tmp_path, ["data=synthetic", "eval=llm"])
    for stage, loader in (("valid", dm.val_dataloader()), ("test", dm.test_dataloader())):
        seen_users = []
        for batch in loader:
            seen_users += batch["user"].tolist()
            for name in ("sampled", "candidates"):
                cands, idx = batch[f"{name}_candidates"], batch[f"{name}_target_index"]
                assert (cands.gather(1, idx[:, None]).squeeze(1) == batch["target"]).all()
                # no candidate other than the positive is in the user's history
                seen = batch["seen"]
                hit = (cands[:, :, None] == seen[:, None, :]) & (seen[:, None, :] > 0)
                assert not hit.any(dim=2).scatter(1, idx[:, None], False).any()
            # history is the tail of seen, left-padded
            for h, s in zip(batch["history"].numpy(), batch["seen"].numpy()):
                s = s[s > 0]
                np.testing.assert_array_equal(h[h > 0], s[-dm.max_len:])
        np.testing.assert_array_equal(sorted(seen_users), dm.eval_users(stage))
    assert batch["candidates_candidates"].shape[1] == 20 and batch["sampled_candidates"].shape[1] == 101


def test_eval_users_is_one_seeded_subset_served_whole_and_shared_by_every_method(tmp_path):
    full = _datamodule(tmp_path, ["data=synthetic"])
    sub = _datamodule(tmp_path, ["data=synthetic", "data.eval_users=7", "strategy=pop"])
    other_method = _datamodule(tmp_path, ["data=synthetic", "data.eval_users=7", "strategy=sr", "seed=5",
                                          "data.split.seed=42"])
    for stage, loader in (("valid", sub.val_dataloader()), ("test", sub.test_dataloader())):
        users = sub.eval_users(stage)
        assert len(users) == 7 and set(users) <= set(full.eval_users(stage))
        served = [u for batch in loader for u in batch["user"].tolist()]
        np.testing.assert_array_equal(sorted(served), users)  # each subset user exactly once, nobody else
        # the rows are the full datamodule's rows for those users (same targets, same persisted candidates)
        rows = {u: (t, c) for b in full.eval_dataloader(stage) for u, t, c in
                zip(b["user"].tolist(), b["target"].tolist(), b["sampled_candidates"].tolist())}
        for b in loader:
            for u, t, c in zip(b["user"].tolist(), b["target"].tolist(), b["sampled_candidates"].tolist()):
                assert rows[u] == (t, c)
    # the subset depends on the split seed only: another strategy and run seed evaluate the same users
    np.testing.assert_array_equal(other_method.eval_users("test"), sub.eval_users("test"))
    # more users than exist: everyone
    assert len(_datamodule(tmp_path, ["data=synthetic", "data.eval_users=100000"]).eval_users("test")) == len(
        full.eval_users("test"))
    with pytest.raises(Exception, match="data.eval_users: expected a positive number"):  # hydra wraps the ValueError
        _datamodule(tmp_path, ["data=synthetic", "data.eval_users=0"])
