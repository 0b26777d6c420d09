"""Rationale store → 🤗 ``datasets`` tables the students read (``datasets.load_from_disk(dir)``).

Tables (only entries with ``status == "ok"``; failures are listed apart and never filled in):

- ``rdrec_interactions``: user, item, user_preference, item_attribute — one row per training interaction;
- ``rdrec_users``: user, preferences (list, in training order), items — the user-level rationale, aggregated
  from that user's training interactions only;
- ``rdrec_items``: item, attributes (list), users — the item-level rationale, aggregated likewise;
- ``rdrec_item_rationales``: item, item_attribute — the item-level prompt's sentence (item metadata only), one
  row per item;
- ``rdrec_user_rationales``: user, user_preference — the user-level prompt's sentence (the user's latest training
  items only), one row per user;
- ``slim_users``: user, student_prompt, preferences, categories, items, rationale — SLIM's distillation pairs;
- ``failures``: key, family, kind, user, item, attempts, error, text.

Every row carries ``key``, ``model_id`` and ``template_hash`` for provenance. The directory is written to a temp
dir and renamed into place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import datasets
import pandas as pd

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_dir

TABLES = ("rdrec_interactions", "rdrec_users", "rdrec_items", "rdrec_item_rationales", "rdrec_user_rationales",
          "slim_users", "failures")
_S, _I = datasets.Value("string"), datasets.Value("int64")
_PROV = {"key": _S, "model_id": _S, "template_hash": _S}
FEATURES = {
    "rdrec_interactions": datasets.Features({"user": _I, "item": _I, "user_preference": _S, "item_attribute": _S, **_PROV}),
    "rdrec_users": datasets.Features({"user": _I, "preferences": datasets.List(_S), "items": datasets.List(_I)}),
    "rdrec_items": datasets.Features({"item": _I, "attributes": datasets.List(_S), "users": datasets.List(_I)}),
    "rdrec_item_rationales": datasets.Features({"item": _I, "item_attribute": _S, **_PROV}),
    "rdrec_user_rationales": datasets.Features({"user": _I, "user_preference": _S, **_PROV}),
    "slim_users": datasets.Features({"user": _I, "student_prompt": _S, "preferences": _S, "categories": _S, "items": _S,
                                     "rationale": _S, **_PROV}),
    "failures": datasets.Features({"key": _S, "family": _S, "kind": _S, "user": _I, "item": _I, "attempts": _I,
                                   "error": _S, "text": _S}),
}


def to_frames(records: Iterable[dict]) -> dict[str, pd.DataFrame]:
    inter, slim, fail, item_level, user_level = [], [], [], [], []
    for r in records:
        ent, prov = r["entity"], r["provenance"]
        base = {"key": r["key"], "model_id": prov.get("model_id", ""), "template_hash": prov.get("template_hash", "")}
        if r["status"] != "ok":
            last = r["rejected"][-1]["error"] if r.get("rejected") else ""
            fail.append({"key": r["key"], "family": r["family"], "kind": r["kind"], "user": ent.get("user", 0),
                         "item": ent.get("item", 0), "attempts": r["attempts"], "error": last, "text": r["text"]})
        elif r["family"] == "rdrec" and r["kind"] == "item":
            item_level.append({"item": ent["item"], "item_attribute": r["output"]["item_attribute"], **base})
        elif r["family"] == "rdrec" and r["kind"] == "user":
            user_level.append({"user": ent["user"], "user_preference": r["output"]["user_preference"], **base})
        elif r["family"] == "rdrec":
            order = r["extra"].get("position", r["extra"].get("timestamp", 0))
            inter.append({"user": ent["user"], "item": ent["item"], "order": float(order), **r["output"], **base})
        elif r["family"] == "slim":
            slim.append({"user": ent["user"], "student_prompt": r["extra"]["student_prompt"], **r["output"], **base})
    inter_df = pd.DataFrame(inter, columns=["user", "item", "order", "user_preference", "item_attribute", "key",
                                            "model_id", "template_hash"])
    inter_df = inter_df.sort_values(["user", "order", "item"], kind="stable").reset_index(drop=True)
    users = (inter_df.groupby("user", sort=True)
             .agg(preferences=("user_preference", list), items=("item", list)).reset_index())
    items = (inter_df.sort_values(["item", "user"], kind="stable").groupby("item", sort=True)
             .agg(attributes=("item_attribute", list), users=("user", list)).reset_index())
    slim_df = pd.DataFrame(slim, columns=["user", "student_prompt", "preferences", "categories", "items", "rationale",
                                          "key", "model_id", "template_hash"]).sort_values("user").reset_index(drop=True)
    fail_df = pd.DataFrame(fail, columns=["key", "family", "kind", "user", "item", "attempts", "error", "text"])
    prov = ["key", "model_id", "template_hash"]
    item_df = pd.DataFrame(item_level, columns=["item", "item_attribute", *prov]).sort_values("item").reset_index(drop=True)
    user_df = pd.DataFrame(user_level, columns=["user", "user_preference", *prov]).sort_values("user").reset_index(drop=True)
    return {"rdrec_interactions": inter_df.drop(columns="order"), "rdrec_users": users, "rdrec_items": items,
            "rdrec_item_rationales": item_df, "rdrec_user_rationales": user_df, "slim_users": slim_df, "failures": fail_df.sort_values("key").reset_index(drop=True)}


def export(records: Iterable[dict], out_dir: str | Path, meta: dict | None = None) -> dict[str, int]:
    """Write the tables as one ``DatasetDict`` at ``out_dir``; return the row count of each table."""
    frames = to_frames(records)
    with atomic_dir(out_dir) as tmp:
        was = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        try:
            for name, df in frames.items():
                if len(df):  # datasets cannot reload an empty saved table; `load` rebuilds those from FEATURES
                    table = datasets.Dataset.from_pandas(df, features=FEATURES[name], preserve_index=False)
                    table.save_to_disk(str(tmp / "tables" / name))
        finally:
            if not was:
                datasets.enable_progress_bars()
        counts = {name: len(df) for name, df in frames.items()}
        (tmp / "meta.json").write_text(json.dumps({**(meta or {}), "rows": counts}, indent=1, default=str) + "\n")
    return counts


def load(out_dir: str | Path) -> datasets.DatasetDict:
    """The exported tables (every name in ``TABLES``; empty ones with their columns)."""
    root = Path(out_dir) / "tables"
    return datasets.DatasetDict({
        name: datasets.load_from_disk(str(root / name)) if (root / name).exists()
        else datasets.Dataset.from_dict({c: [] for c in FEATURES[name]}, features=FEATURES[name])
        for name in TABLES
    })


def load_checked(out_dir: str | Path, fingerprint: str) -> tuple[datasets.DatasetDict, dict]:
    """The exported tables and ``meta.json`` of a rationale export, after checking that it was generated for the
    prepared dataset with this ``fingerprint`` (the same split, the same ids): the one loader every method uses."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError("not a rationale export (no meta.json); make one with `rdrec-generate` and point the "
                        "config at its export directory", path=out_dir)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"broken JSON: {err}", path=meta_path) from None
    if meta.get("fingerprint") != fingerprint:
        raise DataError("the rationales were generated for another split of the data (other ids); regenerate them "
                        "or use the same data.split settings", path=meta_path, field="fingerprint",
                        expected=str(fingerprint)[:16], got=str(meta.get("fingerprint"))[:16])
    return load(out_dir), meta

