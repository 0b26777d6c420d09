"""SLIM's data: distillation pairs and user splits, rationale/item text tables and their vectors, and the
guarantee that student prompts (hence student rationales) are built from training interactions only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rdrec.errors import DataError
from rdrec.methods.slim.distill_data import SlimDistillDataModule, split_users
from rdrec.methods.slim.rec_data import SlimRecDataModule
from rdrec.methods.slim.texts import encode_cached, item_texts, load_rationales
from rdrec.data.split import SplitConfig
from rdrec.teacher.prompts import Subset
from tests.test_slim_fixtures import HashEncoder, answer, slim_family, synthetic_prepared, synthetic_source, write_export


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slimdata")
    prepared = synthetic_prepared(tmp / "cache")
    export = write_export(prepared, tmp / "export", users=30)
    return tmp, prepared, export


def datamodule(cls, tmp, **kw):
    return cls(source=synthetic_source(), split=SplitConfig(seed=42), cache_dir=str(tmp / "cache"), max_len=10,
               batch_size=4, eval_batch_size=8, **kw)


def test_student_prompts_see_only_training_items(setup):
    """Student rationales are generated from SlimFamily prompts over the training view (teacher and student
    families alike): every item a prompt shows is a training item of that user, and no held-out target
    appears in it, by id or by title."""
    _, prepared, _ = setup
    view = prepared.train_view()
    held_out = {stage: dict(zip(prepared.eval_view(stage).users.tolist(), prepared.eval_view(stage).targets.tolist()))
                for stage in ("valid", "test")}
    titles = dict(zip(prepared.items["item"].tolist(), prepared.items["title"].tolist()))
    checked = 0
    for family in (slim_family("slim"), slim_family("slim_student")):
        prompts = family.build(view, Subset())
        assert len(prompts) == sum(len(s) > 0 for s in view.sequences)
        for p in prompts:
            user = p.entity["user"]
            train_items = set(view.sequences[user].tolist())
            shown = p.extra["history_items"]
            assert shown and set(shown) <= train_items
            assert shown == view.sequences[user][-family.history_len:].tolist()  # the latest training items
            text = " ".join(c for _, c in p.messages) + p.extra["student_prompt"]
            for stage in ("valid", "test"):
                target = held_out[stage][user]
                # (synthetic titles repeat and nest across items: check titles no shown title contains)
                if target not in train_items and not any(titles[target] in titles[i] for i in shown):
                    assert titles[target] not in text, (user, stage)
                    checked += 1
    assert checked > 20


def test_student_generation_prompt_is_the_distillation_prompt(setup):
    """The student is asked at generation time exactly what it was trained on (conf/prompts/slim_student.yaml
    renders the `student` template of slim.yaml), for the same history."""
    _, prepared, _ = setup
    view = prepared.train_view()
    teacher = {p.entity["user"]: p for p in slim_family("slim").build(view, Subset(users=10))}
    student = {p.entity["user"]: p for p in slim_family("slim_student").build(view, Subset(users=10))}
    for user, p in student.items():
        assert p.messages == (("user", teacher[user].extra["student_prompt"]),)


def test_split_users_is_seeded_disjoint_and_order_free():
    users = list(range(1, 51))
    a = split_users(users, 5, 10, seed=3)
    b = split_users(users[::-1], 5, 10, seed=3)
    assert a == b and len(a["heldout"]) == 10 and len(a["valid"]) == 5 and len(a["train"]) == 35
    parts = [set(v) for v in a.values()]
    assert set().union(*parts) == set(users) and sum(map(len, parts)) == 50
    assert split_users(users, 5, 10, seed=4) != a
    with pytest.raises(ValueError, match="too few"):
        split_users(range(10), 5, 5, 0)


def test_distill_datamodule_pairs_max_samples_and_no_heldout_in_training(setup):
    tmp, prepared, export = setup
    dm = datamodule(SlimDistillDataModule, tmp, teacher=str(export), valid_users=4, heldout_users=6, max_samples=7)
    dm.prepare_data()
    dm.setup()
    train = dm.pairs["train"].rows
    assert len(train) == 7 and len(dm.pairs["valid"]) == 4 and len(dm.pairs["test"]) == 6
    heldout = set(dm.user_split["heldout"]) | set(dm.user_split["valid"])
    assert not heldout & {r["user"] for r in train}
    stored = {r["user"]: r for r in __import__("rdrec.teacher.export", fromlist=["load"]).load(export)["slim_users"]}
    for row in train:
        assert row["prompt"] == stored[row["user"]]["student_prompt"] and row["target"] == answer(row["user"])["rationale"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["user"].shape == (4,) and len(batch["prompt"]) == 4 and isinstance(batch["target"][0], str)
    # the first step only, as the target of the distillation
    step1 = datamodule(SlimDistillDataModule, tmp, teacher=str(export), valid_users=4, heldout_users=6, target_step=1)
    step1.setup()
    assert all(r["target"] == answer(r["user"])["preferences"] for r in step1.pairs["train"].rows)


def test_rationales_of_another_split_are_refused(setup, tmp_path):
    _, prepared, export = setup
    other = synthetic_prepared(tmp_path / "cache", split_seed=7)
    with pytest.raises(DataError, match="fingerprint"):
        load_rationales(export, other)
    with pytest.raises(DataError, match="no meta.json"):
        load_rationales(tmp_path, prepared)
    meta = json.loads((export / "meta.json").read_text())
    assert meta["fingerprint"] == prepared.fingerprint
    steps = {s: load_rationales(export, prepared, s) for s in ("1", "2", "3", "all")}
    user = next(iter(steps["all"]))
    assert steps["1"][user] == answer(user)["preferences"] and steps["3"][user] == answer(user)["items"]
    assert steps["all"][user].startswith("1. ") and "\n3. " in steps["all"][user]
    with pytest.raises(ValueError, match="rationale step"):
        load_rationales(export, prepared, "4")


def test_item_texts_are_title_categories_brand_year(setup):
    _, prepared, _ = setup
    texts = item_texts(prepared.train_view())
    assert texts[0] == "" and len(texts) == prepared.num_items + 1
    row = prepared.items.iloc[0]
    assert texts[int(row["item"])].startswith(row["title"])
    if len(row["categories"]):
        assert f"Categories: {', '.join(row['categories'])}" in texts[int(row["item"])]
    assert item_texts(prepared.train_view(), ("title",))[int(row["item"])] == row["title"]
    with pytest.raises(ValueError, match="unknown"):
        item_texts(prepared.train_view(), ("price",))


def test_rec_datamodule_tables_coverage_and_vector_cache(setup):
    tmp, prepared, export = setup
    encoder = HashEncoder(dim=16)
    dm = datamodule(SlimRecDataModule, tmp, encoder=encoder, rationales=str(export), candidate_lists={})
    dm.setup()
    assert dm.user_text.shape == (prepared.num_users + 1, 16) and dm.item_text.shape == (prepared.num_items + 1, 16)
    has = torch.tensor([bool(t) for t in ["", *[""] * prepared.num_users]])
    covered = set(load_rationales(export, prepared))
    nonzero = set(torch.nonzero(dm.user_text.abs().sum(1)).squeeze(1).tolist())
    assert nonzero == covered and dm.coverage["users_with_rationale"] == len(covered) == 30
    assert not has.any()
    assert torch.all(dm.user_text[0] == 0) and torch.all(dm.item_text[0] == 0)
    assert encoder.calls == 2
    # a second datamodule reads both tables from the cache
    again = datamodule(SlimRecDataModule, tmp, encoder=encoder, rationales=str(export), candidate_lists={})
    again.setup()
    assert encoder.calls == 2 and torch.equal(again.user_text, dm.user_text)
    # backbone-only: no encoder needed, zero tables
    bare = datamodule(SlimRecDataModule, tmp, encoder=None, rationales=None, item_text=False, candidate_lists={})
    bare.setup()
    assert bare.coverage["users_with_rationale"] == 0 and not bare.item_text.any()
    with pytest.raises(ValueError, match="data.encoder is null"):
        datamodule(SlimRecDataModule, tmp, encoder=None, rationales=str(export), candidate_lists={}).setup()


def test_encode_cached_keys_by_encoder_and_texts(tmp_path):
    enc = HashEncoder(8)
    a = encode_cached(enc, ["a b", "c"], tmp_path)
    b = encode_cached(enc, ["a b", "c"], tmp_path)
    c = encode_cached(enc, ["a b", "d"], tmp_path)
    assert torch.equal(a, b) and enc.calls == 2 and not torch.equal(a, c)
    assert len(list(tmp_path.glob("*.pt"))) == 2 and not list(tmp_path.glob(".*"))
    assert np.allclose(encode_cached(HashEncoder(8), ["a b", "c"], None).numpy(), a.numpy())


def test_unparsed_answers_are_used_whole_only_when_asked(setup, tmp_path):
    from rdrec.teacher.export import export
    from tests.test_slim_fixtures import answer

    _, prepared, _ = setup
    ok = {"key": "k1", "family": "slim", "kind": "user", "entity": {"user": 1}, "status": "ok", "output": answer(1),
          "text": "", "attempts": 1, "rejected": [], "extra": {"student_prompt": "p"}, "provenance": {}}
    bad = {**ok, "key": "k2", "entity": {"user": 2}, "status": "failed", "output": None, "attempts": 2,
           "text": "The user likes everything; no numbered steps here.", "rejected": [{"text": "x", "error": "e"}]}
    export([ok, bad], tmp_path / "e", meta={"fingerprint": prepared.fingerprint})
    assert set(load_rationales(tmp_path / "e", prepared)) == {1}
    both = load_rationales(tmp_path / "e", prepared, unparsed=True)
    assert both[2] == bad["text"] and both[1] == answer(1)["rationale"]
    with pytest.raises(ValueError, match="no steps"):
        load_rationales(tmp_path / "e", prepared, "1", unparsed=True)
