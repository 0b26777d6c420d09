"""Item identifiers of the generative students (rdrec/methods/rdrec/item_ids.py): built from the training view
only, deterministic per seed, one code per item, all codes of one length, and a trie that accepts exactly them."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from rdrec.data.prepared import PreparedDataset
from rdrec.methods.rdrec.item_ids import SCHEMES, ItemIds, build_item_ids, load_or_build, sequential_numbers
from rdrec.methods.rdrec.trie import ItemTrie
from tests.conftest import compose_cfg


def prepared(sequences: list[list[int]], titles: dict[int, str], reviews: dict[tuple[int, int], str] | None = None):
    """Users 1..U with these item sequences (last = test, second last = valid, the rest train)."""
    rows = []
    for u, seq in enumerate(sequences, start=1):
        for pos, item in enumerate(seq):
            split = "test" if pos == len(seq) - 1 else "valid" if pos == len(seq) - 2 else "train"
            rows.append({"user": u, "item": item, "timestamp": float(pos), "rating": 5.0,
                         "review": (reviews or {}).get((u, pos)), "position": pos, "split": split})
    n_items = max(max(s) for s in sequences)
    items = pd.DataFrame({"item": range(1, n_items + 1), "item_id": [f"i{i}" for i in range(1, n_items + 1)],
                          "title": [titles.get(i, f"thing {i}") for i in range(1, n_items + 1)]})
    users = pd.DataFrame({"user": range(1, len(sequences) + 1), "user_id": [f"u{u}" for u in range(1, len(sequences) + 1)]})
    return PreparedDataset("hand", users, items, pd.DataFrame(rows), fingerprint="f")


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in for MiniLM: hashed character trigrams, normalised."""
    out = np.zeros((len(texts), 32))
    for r, t in enumerate(texts):
        for k in range(len(t) - 2):
            out[r, zlib.crc32(t[k:k + 3].encode()) % 32] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


# 40 items in two communities (1..20 and 21..40) that users walk through; item 41 appears only in test rows
def _sequences(test_item: int | None = None) -> list[list[int]]:
    rng = np.random.default_rng(0)
    seqs = []
    for u in range(60):
        base = 1 if u % 2 == 0 else 21
        seq = (base + rng.permutation(20)[:8]).tolist()
        drawn = int(rng.integers(1, 41))
        seqs.append(seq + [drawn if test_item is None else test_item])
    seqs[0][-1] = 41  # item 41 exists, but only as one user's test target
    return seqs


TITLES = {i: ("red apple fruit " if i <= 20 else "blue steel tool ") + str(i) for i in range(1, 42)}
PARAMS = {"collaborative": dict(branching=2, leaf_size=6, window=3), "semantic": dict(levels=2, codebook=4)}


def _build(ds: PreparedDataset, scheme: str, seed: int = 0) -> ItemIds:
    return build_item_ids(ds.train_view(), scheme, seed=seed, embed=fake_embed, **PARAMS.get(scheme, {}))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_codes_are_unique_fixed_length_deterministic_and_cover_every_item(scheme):
    ds = prepared(_sequences(), TITLES)
    ids = _build(ds, scheme)
    assert ids.codes.shape[0] == 42 and ids.num_items == 41
    assert len({tuple(r) for r in ids.codes[1:].tolist()}) == 41  # one code per item
    texts = [ids.text(i) for i in range(1, 42)]
    assert len(set(texts)) == 41
    np.testing.assert_array_equal(_build(ds, scheme).codes, ids.codes)  # same seed, same codes
    if scheme in ("random", "semantic"):  # (spectral clustering with cluster_qr labels does not draw at random)
        assert any(not np.array_equal(_build(ds, scheme, seed=s).codes, ids.codes) for s in (1, 2, 3))
    if scheme in ("random", "sequential"):
        assert {len(t) for t in texts} == {len("item_") + 2}  # zero-padded: item_07 … item_41
    else:
        assert {t.count("<") for t in texts} == {ids.length}
        assert set(ids.new_tokens()) == {tok for t in texts for tok in t.replace("><", ">|<").split("|")}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_held_out_interactions_and_text_never_change_the_codes(scheme):
    """Plant held-out data that would move the codes if it were read: every user's test target becomes item 41
    (co-occurring with every last training item), the held-out reviews change, and the held-out-only item 41
    gets a title like the other community's. The codes of every item stay the same."""
    ds = prepared(_sequences(), TITLES)
    reviews = {(u, 8): "blue steel tool blue steel tool" for u in range(1, 61)}
    planted = prepared(_sequences(test_item=41), {**TITLES, 41: "red apple fruit 41"}, reviews)
    a, b = _build(ds, scheme), _build(planted, scheme)
    if scheme == "semantic":  # item 41's own code follows its (catalogue) text; no other item's may move
        np.testing.assert_array_equal(a.codes[:41], b.codes[:41])
    else:
        np.testing.assert_array_equal(a.codes, b.codes)


def test_collaborative_codes_follow_the_training_communities():
    ds = prepared(_sequences(), TITLES)
    ids = _build(ds, "collaborative")
    top = ids.codes[1:, 0]
    assert len(set(top[:20])) == 1 and len(set(top[20:40])) == 1 and top[0] != top[20]
    assert top[40] not in (top[0], top[20])  # the item without training interactions: a branch of its own


def test_semantic_codes_follow_the_item_text():
    ds = prepared(_sequences(), TITLES)
    ids = _build(ds, "semantic")
    first = ids.codes[1:, 0]
    assert not set(first[:20]) & set(first[20:40])


def test_sequential_numbering_is_p5s_first_appearance_order():
    ds = prepared([[3, 1, 2, 9, 9], [2, 4, 1, 9, 9]], {})
    assert sequential_numbers(ds.train_view()).tolist() == [0, 2, 3, 1, 4, 5, 6, 7, 8, 9]
    ids = build_item_ids(ds.train_view(), "sequential")
    assert [ids.text(i) for i in (3, 1, 2, 4)] == ["item_1", "item_2", "item_3", "item_4"]


def test_codes_are_cached_by_the_split_fingerprint(tmp_path):
    ds = prepared(_sequences(), TITLES)
    ids = load_or_build(ds.train_view(), "fp1", tmp_path, scheme="collaborative", seed=0, **PARAMS["collaborative"])
    files = list((tmp_path / "item_ids" / "fp1").glob("collaborative-*.npy"))
    assert len(files) == 1
    np.save(files[0], ids.codes[:, ::-1].copy())  # a cached entry is read, not rebuilt
    again = load_or_build(ds.train_view(), "fp1", tmp_path, scheme="collaborative", seed=0, **PARAMS["collaborative"])
    np.testing.assert_array_equal(again.codes, ids.codes[:, ::-1])
    other = load_or_build(ds.train_view(), "fp2", tmp_path, scheme="collaborative", seed=0, **PARAMS["collaborative"])
    np.testing.assert_array_equal(other.codes, ids.codes)
    with pytest.raises(ValueError, match="unknown parameter"):
        load_or_build(ds.train_view(), "fp1", tmp_path, scheme="random", brnching=3)


@pytest.mark.parametrize("scheme", ["random", "sequential", "independent", "collaborative"])
def test_student_tokens_have_one_length_and_the_trie_accepts_exactly_the_item_codes(tmp_path, scheme):
    cfg = compose_cfg("train", tmp_path, ["strategy=pod", "data=synthetic", "data.source.num_users=40",
                                          "data.source.num_items=60", "backbone=t5_tiny", "data.tokenizer.vocab_size=400", "eval.candidate_lists.sampled.size=20",
                                          f"item_ids={scheme}", "data.item_ids.branching=4", "data.item_ids.leaf_size=4"]
                      if scheme == "collaborative" else
                      ["strategy=pod", "data=synthetic", "data.source.num_users=40", "data.source.num_items=60",
                       "backbone=t5_tiny", "data.tokenizer.vocab_size=400", "eval.candidate_lists.sampled.size=20", f"item_ids={scheme}"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    tokens = dm.item_tokens()
    assert {len(t) for t in tokens.values()} == {len(tokens[1])}  # length-neutral: every item spells as many tokens
    assert len({tuple(t) for t in tokens.values()}) == dm.num_items
    if scheme in ("independent", "collaborative"):
        assert len(tokens[1]) == dm.item_ids.length
        assert dm.tokenizer.convert_ids_to_tokens(tokens[1]) == dm.item_ids.text(1).replace("><", ">|<").split("|")
    tok = dm.tokenizer
    trie = ItemTrie(tokens, tok.eos_token_id, tok.pad_token_id)
    codes = {tuple(t) for t in tokens.values()}

    def walk(prefix: tuple[int, ...]) -> set[tuple[int, ...]]:
        out = set()
        for t in trie.allowed(prefix):
            out |= {prefix} if t == tok.eos_token_id else walk(prefix + (t,))
        return out

    assert walk(()) == codes
    # the encoded batch spells the same tokens for an item in the input as in the target
    batch = next(iter(dm.train_dataloader()))
    rows = (batch["task"] <= 1).nonzero().flatten().tolist()  # sequential and top-N rows: an item is the target
    assert rows
    for row in rows:
        labels = batch["labels"][row]
        assert tuple(labels[labels != -100].tolist()[:-1]) in codes


def test_banning_trie_never_completes_a_banned_item_and_keeps_every_other_reachable():
    codes = {1: [5, 6], 2: [5, 7], 3: [8, 6], 4: [8, 9]}
    trie = ItemTrie(codes, eos_token_id=1, pad_token_id=0)
    fn = trie.banning([[1, 2], [3], []])
    import torch

    def reachable(row: int) -> set[int]:
        out, stack = set(), [()]
        while stack:
            prefix = stack.pop()
            for t in fn(row, torch.tensor([0, *prefix])):
                if t == 1:
                    out.add(trie.lookup([0, *prefix, 1]))
                elif t != 0:
                    stack.append(prefix + (t,))
        return out

    assert reachable(0) == {3, 4}  # both items under prefix 5 banned: 5 is not even offered
    assert fn(0, torch.tensor([0])) == [8]
    assert reachable(1) == {1, 2, 4}
    assert reachable(2) == {1, 2, 3, 4}
