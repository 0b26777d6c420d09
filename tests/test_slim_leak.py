"""SLIM's leak rule: a rationale is fused only at training targets after the history window it was written
from (rdrec/methods/slim/windows.py), for ID-based fusion and ID-agnostic matching alike, and always at
evaluation. A rationale planted to name its own training target must not reach that target's position.

The tests go through the datamodule's training batches and SlimRecModule.training_step, capturing what the
model's ``training_pairs`` returns, and compare a run whose export holds the planted rationale with one whose
export has no rationale for that user."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rdrec.data.split import SplitConfig
from rdrec.methods.slim.rec_data import SlimRecDataModule
from rdrec.methods.slim.rec_module import SlimRecModule
from rdrec.methods.slim.windows import window_ends
from rdrec.models.sasrec import SASRec
from rdrec.teacher.export import export
from rdrec.teacher.prompts import Subset
from tests.test_slim_fixtures import HashEncoder, answer, slim_family, synthetic_prepared, synthetic_source

DIM = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slimleak")
    prepared = synthetic_prepared(tmp / "cache")
    view = prepared.train_view()
    user = next(u for u in range(1, prepared.num_users + 1) if len(view.sequences[u]) >= 6)
    return tmp, prepared, view, user


def planted_export(prepared, view, out, user: int, other: int, planted: bool, meta_extra: dict | None = None,
                   unparsed: bool = False):
    """An export as rdrec-generate writes one (SlimFamily prompts of the training view): ``other`` gets an
    ordinary answer; with ``planted``, ``user``'s answer names the user's last training item (a training
    target) by title in every step."""
    titles = dict(zip(prepared.items["item"].tolist(), prepared.items["title"].tolist()))
    target = titles[int(view.sequences[user][-1])]
    records = []
    for it in slim_family().build(view, Subset()):
        u = it.entity["user"]
        if u == other or (planted and u == user):
            out_ = answer(u)
            if u == user:
                out_ = {"preferences": f"The user loves {target} above all.", "categories": f"More like {target}.",
                        "items": f"Recommend {target} next."}
                out_["rationale"] = "\n".join(f"{i + 1}. {v}" for i, v in enumerate(out_.values()))
            failed = unparsed and u == user  # an answer that never parsed, used whole with unparsed_rationales
            records.append({"key": f"k{u}", "family": "slim", "kind": "user", "entity": it.entity,
                            "status": "failed" if failed else "ok", "output": None if failed else out_,
                            "text": out_["rationale"].replace("\n", " "), "attempts": 1,
                            "rejected": [{"text": "x", "error": "e"}] if failed else [], "extra": it.extra,
                            "provenance": {"model_id": "fake", "template_hash": it.template_hash}})
    export(records, out, meta={"dataset": prepared.name, "fingerprint": prepared.fingerprint, **(meta_extra or {})})
    return out


def build(tmp, export_dir, mode: str, unparsed: bool = False):
    dm = SlimRecDataModule(source=synthetic_source(), split=SplitConfig(seed=42), cache_dir=str(tmp / "cache"),
                           max_len=20, batch_size=4, eval_batch_size=8, candidate_lists={},
                           encoder=HashEncoder(DIM), rationales=str(export_dir), unparsed_rationales=unparsed)
    dm.setup()
    torch.manual_seed(0)
    module = SlimRecModule(lambda num_items, num_users: SASRec(num_items=num_items, max_len=20, hidden_size=8),
                           num_items=dm.num_items, num_users=dm.num_users, protocols={},
                           optimizer=torch.optim.Adam, mode=mode, text_dim=DIM, fusion_dropout=0.0)
    module._trainer = SimpleNamespace(datamodule=dm)  # what setup() reads
    module.setup("fit")
    module._trainer = None
    return dm, module.eval()


class _Captured(Exception):
    pass


def training_outputs(dm, module, user: int):
    """(hidden, targets) that training_step computes for ``user``'s training window."""
    loader = dm.train_dataloader()
    rows = [i for i, u in enumerate(loader.dataset.users.tolist()) if u == user]
    batch = loader.collate_fn(rows)
    seen = {}
    original = module.model.training_pairs

    def spy(*args, **kwargs):
        seen["out"] = original(*args, **kwargs)
        raise _Captured

    module.model.training_pairs = spy
    with torch.no_grad(), pytest.raises(_Captured):
        module.training_step(batch, 0)
    return seen["out"]


@pytest.mark.parametrize("mode", ["fusion", "matching"])
def test_a_rationale_naming_its_own_target_cannot_reach_that_training_position(world, mode):
    tmp, prepared, view, user = world
    other = next(u for u in range(1, prepared.num_users + 1) if u != user and len(view.sequences[u]) >= 2)
    with_it = planted_export(prepared, view, tmp / f"planted_{mode}", user, other, planted=True)
    without = planted_export(prepared, view, tmp / f"control_{mode}", user, other, planted=False)
    dm_p, planted = build(tmp, with_it, mode)
    dm_c, control = build(tmp, without, mode)
    assert dm_p.coverage["users_with_rationale"] == 2 and dm_c.coverage["users_with_rationale"] == 1
    assert dm_p.coverage["train_targets_with_rationale"] == 0.0  # windows end at the last training item
    hidden_p, targets = training_outputs(dm_p, planted, user)
    hidden_c, targets_c = training_outputs(dm_c, control, user)
    assert torch.equal(targets, targets_c)
    target = int(view.sequences[user][-1])  # named by the planted rationale, a training target of this user
    column = (targets[0] == target).nonzero().squeeze(1)
    assert len(column) == 1
    # the planted text is not fused where the model learns to predict the item it names …
    assert torch.equal(hidden_p[0, column], hidden_c[0, column])
    # … nor at any other training position: its window (the latest training items) ends after all of them
    labelled = targets[0] > 0
    assert torch.equal(hidden_p[0, labelled], hidden_c[0, labelled])
    # at evaluation the rationale (written from training history only) is used
    history = torch.as_tensor(view.sequences[user][-20:]).unsqueeze(0)
    users = torch.tensor([user])
    with torch.no_grad():
        assert not torch.equal(planted.model.score_all(history, users), control.model.score_all(history, users))


@pytest.mark.parametrize("mode", ["fusion", "matching"])
def test_a_prefix_rationale_reaches_exactly_the_targets_after_its_window(world, mode):
    """An export written from the training sequence cut k items short (meta ``slim_window.exclude_last``)
    is fused at the last k training targets and nowhere before them."""
    tmp, prepared, view, user = world
    k = 2
    other = next(u for u in range(1, prepared.num_users + 1) if u != user and len(view.sequences[u]) >= 2)
    meta = {"slim_window": {"exclude_last": k}}
    with_it = planted_export(prepared, view, tmp / f"prefix_p_{mode}", user, other, planted=True, meta_extra=meta)
    without = planted_export(prepared, view, tmp / f"prefix_c_{mode}", user, other, planted=False, meta_extra=meta)
    n = len(view.sequences[user])
    assert window_ends(with_it, view.sequences, [user]) == {user: n - k}
    dm_p, planted = build(tmp, with_it, mode)
    total = sum(max(len(q) - 1, 0) for q in view.sequences)
    n_other = len(view.sequences[other])
    assert dm_p.coverage["train_targets_with_rationale"] == (k + min(k, n_other - 1)) / total
    hidden_p, targets = training_outputs(dm_p, planted, user)
    hidden_c, _ = training_outputs(*build(tmp, without, mode), user)
    seq = view.sequences[user].tolist()
    for column in (targets[0] > 0).nonzero().squeeze(1).tolist():
        index = seq.index(int(targets[0, column]))  # synthetic sequences do not repeat items
        same = torch.equal(hidden_p[0, column], hidden_c[0, column])
        assert same == (index < n - k), (column, index)


def test_window_ends_default_recorded_and_bad(world, tmp_path):
    _, prepared, view, user = world
    plain = planted_export(prepared, view, tmp_path / "plain", user, user, planted=True)
    assert window_ends(plain, view.sequences, [user]) == {user: len(view.sequences[user])}
    meta = json.loads((plain / "meta.json").read_text())
    (plain / "meta.json").write_text(json.dumps({**meta, "slim_window": {"exclude_last": -1}}))
    from rdrec.errors import DataError

    with pytest.raises(DataError, match="exclude_last"):
        window_ends(plain, view.sequences, [user])


def test_an_unparsed_answer_follows_the_same_rule(world):
    """Answers that never parsed (used whole with unparsed_rationales) are rationales like any other."""
    tmp, prepared, view, user = world
    other = next(u for u in range(1, prepared.num_users + 1) if u != user and len(view.sequences[u]) >= 2)
    with_it = planted_export(prepared, view, tmp / "unparsed_p", user, other, planted=True, unparsed=True)
    without = planted_export(prepared, view, tmp / "unparsed_c", user, other, planted=False)
    dm_p, planted = build(tmp, with_it, "fusion", unparsed=True)
    dm_c, control = build(tmp, without, "fusion", unparsed=True)
    assert dm_p.coverage["users_with_rationale"] == 2
    hidden_p, targets = training_outputs(dm_p, planted, user)
    hidden_c, _ = training_outputs(dm_c, control, user)
    labelled = targets[0] > 0
    assert torch.equal(hidden_p[0, labelled], hidden_c[0, labelled])
    history, users = torch.as_tensor(view.sequences[user][-20:]).unsqueeze(0), torch.tensor([user])
    with torch.no_grad():
        assert not torch.equal(planted.model.score_all(history, users), control.model.score_all(history, users))


def test_prefix_and_full_window_prompts_of_a_user_never_share_a_store_key(world):
    """The store keys an answer by (fingerprint, family, entity, template, model, parameters): a prompt written
    from a prefix is other data, so PrefixView gives it another fingerprint; otherwise a prefix run would find
    every user "already stored" (the full-window answer) and a leak-free export would hold full-window text."""
    from rdrec.methods.slim.windows import PrefixView
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.generator import RetryPolicy, plan

    _, prepared, view, user = world
    family = slim_family()
    prefix = PrefixView(prepared, 2)
    assert [len(s) for s in prefix.train_view().sequences] == [max(len(s) - 2, 0) for s in view.sequences]

    def keys(data):
        items = family.build(data.train_view(), Subset())
        jobs = [j for b in plan(items, dataset=data.name, fingerprint=data.fingerprint, model_id="m",
                                params=GenerationParams(), retry=RetryPolicy(), seed=1, batch_size=8) for j in b]
        return {j.item.entity["user"]: (j.key, j.item.extra["history_items"]) for j in jobs}

    full, cut = keys(prepared), keys(prefix)
    assert full[user][1] != cut[user][1]  # other histories …
    assert {k for k, _ in full.values()}.isdisjoint(k for k, _ in cut.values())  # … so other keys
    assert keys(PrefixView(prepared, 2)) == cut  # and the same keys on every run (resumable)
    with pytest.raises(ValueError):
        PrefixView(prepared, 0)
