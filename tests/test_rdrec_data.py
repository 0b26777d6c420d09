"""Multi-task text data of the RDRec/POD student: mixture ratios, task ids aligned with inputs, training data only,
rationale exports checked against the split, P5-layout explanations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from rdrec.errors import DataError
from rdrec.methods.rdrec.datamodule import load_rationales
from rdrec.methods.rdrec.tasks import DEFAULT_TEMPLATES, TASK_IDS, TASKS, TaskMixture
from rdrec.teacher.export import export
from tests.conftest import compose_cfg

TINY = ["data=synthetic", "data.source.num_users=40", "data.source.num_items=60", "backbone=t5_tiny",
        "data.tokenizer.vocab_size=400", "data.epoch_size=300", "data.batch_size=16", "eval.candidate_lists.sampled.size=20"]


def _datamodule(tmp_path, strategy="pod", extra=()):
    cfg = compose_cfg("train", tmp_path, [f"strategy={strategy}", *TINY, *extra])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def _record(user: int, item: int, pref: str, attr: str, fingerprint: str, pos: int = 0) -> dict:
    return {"key": f"k{user}-{item}", "family": "rdrec", "kind": "interaction", "entity": {"user": user, "item": item},
            "provenance": {"model_id": "m", "template_hash": "h"}, "status": "ok", "attempts": 1, "text": "",
            "output": {"user_preference": pref, "item_attribute": attr}, "extra": {"position": pos}}


def _export_for(dm, out, n_users=10, fingerprint=None, extra_records=()):
    view = dm.train_view
    records = [_record(u, int(view.sequences[u][-1]), f"The user prefers genre{u}.", f"The item's attributes are kind{u}.",
                       dm.dataset.fingerprint) for u in range(1, n_users + 1)]
    export(records + list(extra_records), out, meta={"fingerprint": fingerprint or dm.dataset.fingerprint})
    return records


def test_mixture_follows_the_ratios_and_is_seeded(tmp_path):
    dm = _datamodule(tmp_path)
    view = dm.train_view
    mix = TaskMixture(view, {"sequential": 3, "topn": 1}, epoch_size=400, seed=1, epoch=0)
    assert mix.counts["sequential"] == 300 and mix.counts["topn"] == 100 and len(mix) == 400
    same = TaskMixture(view, {"sequential": 3, "topn": 1}, epoch_size=400, seed=1, epoch=0)
    assert [same[i] for i in range(50)] == [mix[i] for i in range(50)]
    other_epoch = TaskMixture(view, {"sequential": 3, "topn": 1}, epoch_size=400, seed=1, epoch=1)
    assert [other_epoch[i] for i in range(50)] != [mix[i] for i in range(50)]
    with pytest.raises(ValueError, match="unknown task"):
        TaskMixture(view, {"sequentail": 1}, epoch_size=10)
    with pytest.raises(ValueError, match="no task has both"):
        TaskMixture(view, {"preference": 1}, epoch_size=10)  # no rationales given


def test_examples_come_from_training_interactions_only(tmp_path):
    dm = _datamodule(tmp_path)
    view = dm.train_view
    mix = TaskMixture(view, {"sequential": 1, "topn": 1, "explanation": 1}, epoch_size=600, seed=0,
                      max_history=5, topn_candidates=8)
    train_reviews = view.reviews.groupby(["user", "item"])["review"].apply(set).to_dict()
    for ex in (mix[i] for i in range(len(mix))):
        user = int(ex.source.split("user_")[1].split()[0])
        train_items = set(view.sequences[user].tolist())
        if ex.task in ("sequential", "topn"):
            target = int(ex.target.removeprefix("item_"))
            assert target in train_items
            mentioned = [int(w.removeprefix("item_")) for w in ex.source.split() if w.startswith("item_")]
            if ex.task == "sequential":
                assert set(mentioned) <= train_items and 1 <= len(mentioned) <= 5
            else:  # the target among 7 negatives the user never trained on
                assert len(mentioned) == 8 and mentioned.count(target) == 1
                assert not (set(mentioned) - {target}) & train_items
        else:  # the review of this very training interaction
            item = int(ex.source.split("item_")[1].split()[0])
            assert item in train_items and ex.target in train_reviews[(user, item)]


def test_batches_align_task_ids_with_their_inputs_and_mask_padding(tmp_path):
    dm = _datamodule(tmp_path)
    loader = dm.train_dataloader()
    seen_tasks = set()
    for batch in loader:
        texts = dm.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        for text, task in zip(texts, batch["task"].tolist()):
            name = TASKS[task]
            seen_tasks.add(name)
            head = DEFAULT_TEMPLATES[name].split("{")[0].strip()
            assert text.startswith(head) or head == "", (name, text)
        labels = batch["labels"]
        lengths = (labels != -100).sum(1)
        for row, n in enumerate(lengths.tolist()):  # real tokens first, then only -100
            assert (labels[row, :n] != -100).all() and (labels[row, n:] == -100).all()
            assert labels[row, n - 1] == dm.tokenizer.eos_token_id
    assert seen_tasks == {"sequential", "topn", "explanation"}  # POD: no rationale tasks


def test_rdrec_datamodule_reads_rationales_of_training_interactions(tmp_path):
    base = _datamodule(tmp_path)
    out = tmp_path / "rationales"
    records = _export_for(base, out)
    dm = _datamodule(tmp_path, "rdrec", [f"data.rationales={out}"])
    assert len(dm.rationales) == len(records)
    mix = dm.train_dataset(epoch=0)
    prefs = [mix[i] for i in range(len(mix)) if mix[i].task == "preference"]
    attrs = [mix[i] for i in range(len(mix)) if mix[i].task == "attribute"]
    assert prefs and attrs
    for ex in prefs:  # the target is the rationale of the user named in the input
        user = int(ex.source.split("user_")[1].split()[0])
        assert ex.target == f"The user prefers genre{user}."
    by_text = {dm.item_ids.text(i): i for i in range(1, dm.num_items + 1)}
    for ex in attrs:
        item = by_text["item_" + ex.source.split("item_")[1].split()[0]]
        users = [u for u in range(1, 11) if int(dm.train_view.sequences[u][-1]) == item]
        assert ex.target in {f"The item's attributes are kind{u}." for u in users}
    # the rationale text is part of the tokenizer's corpus
    assert "prefers" in "".join(dm.tokenizer.convert_ids_to_tokens(dm.tokenizer("The user prefers genre3.")["input_ids"]))


def test_rationales_of_another_split_or_of_held_out_interactions_are_refused(tmp_path):
    dm = _datamodule(tmp_path)
    _export_for(dm, tmp_path / "other", fingerprint="0" * 64)
    with pytest.raises(DataError, match="another split") as err:
        load_rationales(tmp_path / "other", dm.dataset.fingerprint, dm.train_view)
    assert "meta.json" in str(err.value) and "fingerprint" in str(err.value)
    test = dm.dataset.eval_view("test")
    leak = _record(int(test.users[0]), int(test.targets[0]), "The user prefers x.", "The item's attributes are y.", "")
    leak["key"] = "leak"
    _export_for(dm, tmp_path / "leaky", extra_records=[leak])
    with pytest.raises(DataError, match="not in the training split"):
        load_rationales(tmp_path / "leaky", dm.dataset.fingerprint, dm.train_view)
    with pytest.raises(DataError, match="no meta.json"):
        load_rationales(tmp_path / "missing", dm.dataset.fingerprint, dm.train_view)
    cfg = compose_cfg("train", tmp_path, ["strategy=rdrec", *TINY, "data.rationales=null"])
    dm2 = instantiate(cfg.data)
    dm2.prepare_data()
    with pytest.raises(ValueError, match="data.rationales is not set"):
        dm2.setup()


def test_eval_batches_carry_the_sequential_input_and_explanation_references(tmp_path):
    dm = _datamodule(tmp_path)
    batch = next(iter(dm.test_dataloader()))
    view = dm.dataset.eval_view("test")
    texts = dm.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    for row, text in enumerate(texts):
        user = int(batch["user"][row])
        assert text.startswith(f"user_{user} has interacted with")
        hist = view.histories[list(view.users).index(user)][-dm.max_history:]
        last, target = dm.item_ids.text(hist[-1]), dm.item_ids.text(batch["target"][row])
        assert f"{last} ; predict" in text  # the latest history item last, the target never shown
        assert f"{target} ;" not in text or int(batch["target"][row]) in hist
    assert (batch["task"] == TASK_IDS["sequential"]).all()
    exp = batch["explanation"]  # synthetic targets have reviews: references for the explanation metrics
    refs = view.references.set_index("user")["review"]
    assert len(exp["references"]) == len(exp["input_ids"]) > 0
    assert set(exp["references"]) <= set(refs.dropna())


def test_p5_layout_explanations_feed_the_explanation_task(tmp_path):
    """A P5/RDRec-layout directory (sequential.txt, datamaps.json, explanation.json as published) through the
    whole pipeline: training explanations become explanation examples, held-out ones never do."""
    d = tmp_path / "raw" / "beauty"
    d.mkdir(parents=True)
    users = {str(u): f"A{u:05d}" for u in range(1, 7)}
    items = {str(i): f"B{i:09d}" for i in range(1, 9)}
    lines = [f"{u} " + " ".join(str((u + k) % 8 + 1) for k in range(5)) for u in range(1, 7)]
    (d / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    (d / "datamaps.json").write_text(json.dumps({"user2id": {v: k for k, v in users.items()},
                                                  "item2id": {v: k for k, v in items.items()},
                                                  "id2user": users, "id2item": items}))
    # explanation.json with the published random 8:1:1 lists; each record names (user, item) by index
    rows = [{"user": u, "item": (u + k) % 8 + 1, "explanation": f"sentence {u}-{k}", "feature": "f"}
            for u in range(1, 7) for k in range(5)]
    (d / "explanation.json").write_text(json.dumps({"train": rows[::2], "val": rows[1::4], "test": rows[3::4]}))
    cfg = compose_cfg("train", tmp_path, ["strategy=pod", "data=beauty", f"data.source.root={tmp_path / 'raw'}",
                                          "backbone=t5_tiny", "data.tokenizer.vocab_size=300", "data.epoch_size=200",
                                          "data.split.min_user_interactions=3", "eval.candidate_lists.sampled.size=2"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    mix = dm.train_dataset()
    explanations = {mix[i].target for i in range(len(mix)) if mix[i].task == "explanation"}
    train_reviews = set(dm.train_view.reviews["review"])
    held_out = set(dm.dataset.interactions.query("split != 'train'")["review"].dropna())
    assert explanations and explanations <= train_reviews and not explanations & held_out
    assert held_out  # the published lists put some explanations on held-out interactions: they stay out
