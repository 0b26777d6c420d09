"""Full-coverage exports (user- and item-level RDRec sentences) in the RDRec data module: every training
interaction of a covered user/item gets its sentences, and the coverage is reported exactly when it is partial."""

from __future__ import annotations

from rdrec.methods.rdrec.datamodule import load_rationales, rationale_coverage
from rdrec.teacher.export import export, load
from tests.test_rdrec_data import _datamodule, _record


def _level(kind: str, entity: int, text: str) -> dict:
    field = {"user": "user_preference", "item": "item_attribute"}[kind]
    return {"key": f"{kind}{entity}", "family": "rdrec", "kind": kind, "entity": {kind: entity},
            "provenance": {"model_id": "m", "template_hash": "h"}, "status": "ok", "attempts": 1, "text": text,
            "output": {field: text}, "extra": {}}


def test_partial_coverage_is_reported_exactly_and_fills_training_interactions(tmp_path):
    base = _datamodule(tmp_path)
    view = base.train_view
    out = tmp_path / "rationales"
    users, items = [1, 2, 3], [1, 2, 3, 4, 5, view.num_items]  # the last item id may have no training interaction
    u9_item = int(view.sequences[9][-1])
    records = [_level("user", u, f"The user prefers genre{u}.") for u in users]
    records += [_level("item", i, f"The item's attributes are kind{i}.") for i in items]
    records.append(_record(9, u9_item, "The user prefers own9.", "The item's attributes are own9.", ""))
    counts = export(records, out, meta={"fingerprint": base.dataset.fingerprint})
    assert counts["rdrec_user_rationales"] == 3 and counts["rdrec_item_rationales"] == 6
    assert load(out)["rdrec_item_rationales"]["item"] == items

    frame = load_rationales(out, base.dataset.fingerprint, view)
    for u, i, pref, attr in frame[["user", "item", "user_preference", "item_attribute"]].itertuples(index=False):
        if (u, i) == (9, u9_item):  # an interaction's own sentences come first
            assert (pref, attr) == ("The user prefers own9.", "The item's attributes are own9.")
            continue
        assert i in view.sequences[u].tolist()  # training interactions only
        assert pref == (f"The user prefers genre{u}." if u in users else "")
        assert attr == (f"The item's attributes are kind{i}." if i in items else "")
    train = {(u, int(i)) for u, seq in enumerate(view.sequences) for i in seq}
    expected_rows = {(u, int(i)) for u, i in train if u in users or i in items} | {(9, u9_item)}
    assert set(zip(frame["user"], frame["item"])) == expected_rows and len(frame) == len(expected_rows)

    both = {(u, i) for u, i in train if u in users and i in items} | {(9, u9_item)}
    expected = {"users_with_rationale": 4, "user_coverage": 4 / view.num_users,
                "items_with_rationale": len(set(items) | {u9_item}),
                "item_coverage": len(set(items) | {u9_item}) / view.num_items,
                "interaction_coverage": len(both) / len(train)}
    assert rationale_coverage(frame, view) == expected

    dm = _datamodule(tmp_path, "rdrec", [f"data.rationales={out}"])
    assert dm.coverage == expected and 0 < dm.coverage["user_coverage"] < 1


def test_full_coverage_is_one(tmp_path):
    base = _datamodule(tmp_path)
    view = base.train_view
    out = tmp_path / "full"
    records = [_level("user", u, f"The user prefers g{u}.") for u in range(1, view.num_users + 1)]
    records += [_level("item", i, f"The item's attributes are k{i}.") for i in range(1, view.num_items + 1)]
    export(records, out, meta={"fingerprint": base.dataset.fingerprint})
    cov = rationale_coverage(load_rationales(out, base.dataset.fingerprint, view), view)
    assert cov["user_coverage"] == cov["item_coverage"] == cov["interaction_coverage"] == 1.0


def test_coverage_full_preset_asks_for_every_item_and_user(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_cfg
    from tests.test_teacher_fixtures import synthetic_prepared

    cfg = compose_cfg("generate", tmp_path, ["+coverage=full"])
    fams = {n: instantiate(spec) for n, spec in cfg.families.items()}
    subset = instantiate(cfg.subset)
    view = synthetic_prepared(tmp_path, with_reviews=False, num_users=12).train_view()
    kinds = {}
    for fam in fams.values():
        for item in fam.build(view, subset):
            kinds.setdefault((item.family, item.kind), []).append(item.entity)
    users = [{"user": u} for u in range(1, view.num_users + 1)]
    assert kinds == {("rdrec", "item"): [{"item": i} for i in range(1, view.num_items + 1)],
                     ("rdrec", "user"): users, ("slim", "user"): users}
