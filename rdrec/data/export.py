"""Export a prepared dataset for other tools: CSV, Parquet, and RecBole atomic files with our exact split.

Layout under ``out_dir`` (each format directory is written to a temp dir and renamed into place):

    csv/{interactions,items,users}.csv          original and remapped ids, the `split` column
    parquet/{interactions,items,users}.parquet  same tables, list columns kept as lists
    recbole/<name>/<name>.{inter,item,user}     RecBole atomic files (remapped ids as tokens)
    recbole/<name>/<name>.{train,valid,test}.inter + <name>.yaml   RecBole benchmark files + config

How RecBole 1.2.1 reads benchmark files for sequential models (read in recbole/data/dataset/dataset.py and
sequential_dataset.py of the 1.2.1 wheel):
* ``benchmark_filename: [train, valid, test]`` loads ``<name>.<suffix>.inter``, concatenates them and slices
  them back into the three sets in ``build()``: no filtering, ordering or splitting of its own
  (``eval_args.split`` is ignored, but SequentialDataset still insists on ``order: TO``).
* With benchmark files SequentialDataset does NOT augment sequences. ``_benchmark_presets`` needs an
  ``item_id_list`` column (ITEM_ID_FIELD + LIST_SUFFIX, ``token_seq``) and sets ``item_length``
  (ITEM_LIST_LENGTH_FIELD) to each list's length. So every row is one (history prefix → next item) example,
  train rows included: we write one train row per train interaction after the user's first.
* RecBole's own augmentation never makes a row with an empty history (a user's first item is only ever
  history; an empty list would make GRU4Rec/SASRec gather position -1), so neither do we.
* Lists are not truncated on load (``seq_len`` would keep the *oldest* items) while models size their
  position embeddings by MAX_ITEM_LIST_LENGTH: we keep the most recent ``max_len`` items, as RecBole does.
* A ``token_seq`` field gets its own id space unless aliased: ``alias_of_item_id: [item_id_list]`` makes list
  tokens and ``item_id`` share ids. Lists carry no padding tokens (a literal 0 would become an item).
* ``load_col`` must name ``item_id_list`` (RecBole's default loads only user_id and item_id).
* Sequential models need ``repeatable: True``; CE-loss models (SASRec's default) ``train_neg_sample_args: ~``.
* RecBole's full ranking for sequential models does not exclude history items, and its ``uniNNN``/``popNNN``
  modes draw their own negatives: compare against rdrec's `full` protocol with history exclusion off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rdrec.data.prepared import PreparedDataset
from rdrec.utils.atomic import atomic_dir

FORMATS = ("csv", "parquet", "recbole")
_SPACE = re.compile(r"\s+")


def export(
    prepared: PreparedDataset,
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    max_len: int = 50,
) -> dict[str, Path]:
    """Write the requested formats; returns {format: directory}. ``max_len`` is RecBole's MAX_ITEM_LIST_LENGTH."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"export: unknown format(s) {unknown}; expected some of {list(FORMATS)}")
    out_dir = Path(out_dir).absolute()
    written = {}
    for fmt in formats:
        final = out_dir / fmt if fmt != "recbole" else out_dir / "recbole" / prepared.name
        writer = {"csv": _write_csv, "parquet": _write_parquet, "recbole": _write_recbole}[fmt]
        _atomic_dir(final, lambda tmp: writer(prepared, tmp, final, max_len))  # called right away
        written[fmt] = final
    return written


# ---- tabular -----------------------------------------------------------------------------------------------------
def tables_with_ids(prepared: PreparedDataset) -> dict[str, pd.DataFrame]:
    """interactions with the original ids next to the remapped ones, plus the items and users tables."""
    inter = prepared.interactions
    user_ids = prepared.users["user_id"].to_numpy()[inter["user"].to_numpy() - 1]
    item_ids = prepared.items["item_id"].to_numpy()[inter["item"].to_numpy() - 1]
    inter = pd.concat([pd.DataFrame({"user_id": user_ids, "item_id": item_ids}), inter], axis=1)
    return {"interactions": inter, "items": prepared.items, "users": prepared.users}


def _write_csv(prepared: PreparedDataset, tmp: Path, final: Path, max_len: int) -> None:
    for name, frame in tables_with_ids(prepared).items():
        frame = frame.copy()
        if "categories" in frame:  # a list per cell: JSON keeps it unambiguous
            frame["categories"] = [json.dumps(list(c), ensure_ascii=False) for c in frame["categories"]]
        frame.to_csv(tmp / f"{name}.csv", index=False)


def _write_parquet(prepared: PreparedDataset, tmp: Path, final: Path, max_len: int) -> None:
    for name, frame in tables_with_ids(prepared).items():
        frame.to_parquet(tmp / f"{name}.parquet", index=False)


# ---- RecBole -----------------------------------------------------------------------------------------------------
def _write_recbole(prepared: PreparedDataset, tmp: Path, final: Path, max_len: int) -> None:
    name = prepared.name
    inter = prepared.interactions
    _recbole_file(
        tmp / f"{name}.inter",
        pd.DataFrame({"user_id:token": inter["user"], "item_id:token": inter["item"],
                      "rating:float": inter["rating"], "timestamp:float": inter["timestamp"]}),
    )
    items = prepared.items
    _recbole_file(
        tmp / f"{name}.item",
        pd.DataFrame({
            "item_id:token": items["item"],
            "title:token_seq": [_text(t) for t in items["title"]],
            # one token per category: spaces inside a category name become underscores
            "categories:token_seq": [" ".join(_text(c).replace(" ", "_") for c in cats) for cats in items["categories"]],
            "brand:token": [_text(b) for b in items["brand"]],
            "year:float": items["year"].astype("float64"),
        }),
    )
    users = prepared.users
    user_cols = {"user_id:token": users["user"]}
    for col in users.columns.drop(["user", "user_id"]):
        user_cols[f"{_field(col)}:token"] = [_text(v) for v in users[col]]
    _recbole_file(tmp / f"{name}.user", pd.DataFrame(user_cols))

    for stage, frame in benchmark_rows(prepared, max_len).items():
        _recbole_file(tmp / f"{name}.{stage}.inter", frame)
    config_text = "# RecBole 1.2.1: loads rdrec's exact leave-one-out split (see rdrec/data/export.py).\n"
    config_text += yaml.safe_dump(recbole_config(name, final.parent, max_len), sort_keys=False)
    (tmp / f"{name}.yaml").write_text(config_text)


def benchmark_rows(prepared: PreparedDataset, max_len: int) -> dict[str, pd.DataFrame]:
    """One row per interaction after each user's first: user, target item, its time, and the (at most
    ``max_len``) items before it; the row's split names the file it goes to."""
    inter = prepared.interactions
    users = inter["user"].to_numpy()
    items = inter["item"].to_numpy().astype(str)
    positions = inter["position"].to_numpy()
    starts = np.flatnonzero(positions == 0)  # rows are sorted by (user, position)
    histories = [" ".join(items[max(start + p - max_len, start) : start + p])
                 for start, p in zip(np.repeat(starts, np.diff(np.append(starts, len(inter)))), positions)]
    frame = pd.DataFrame({
        "user_id:token": users, "item_id:token": inter["item"].to_numpy(),
        "timestamp:float": inter["timestamp"].to_numpy(), "item_id_list:token_seq": histories,
    })
    keep = positions > 0
    split = inter["split"].to_numpy()
    return {stage: frame[keep & (split == stage)].reset_index(drop=True) for stage in ("train", "valid", "test")}


def recbole_config(name: str, data_path: Path, max_len: int) -> dict:
    return {
        "data_path": str(data_path),
        "dataset": name,
        "field_separator": "\t",
        "seq_separator": " ",
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": "rating",
        "TIME_FIELD": "timestamp",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "MAX_ITEM_LIST_LENGTH": max_len,
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "item_id_list"]},
        "alias_of_item_id": ["item_id_list"],
        "benchmark_filename": ["train", "valid", "test"],
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "repeatable": True,
        "train_neg_sample_args": None,
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [1, 5, 10, 20],
        "valid_metric": "NDCG@10",
    }


def _text(value) -> str:
    """One line, single-spaced: tabs and newlines would break RecBole's tab-separated atomic files."""
    return "" if value is None or value is pd.NA else _SPACE.sub(" ", str(value)).strip()


def _field(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", str(name))


# ---- atomic writes -----------------------------------------------------------------------------------------------
def _recbole_file(path: Path, frame: pd.DataFrame) -> None:
    """A RecBole "atomic file": tab-separated with a typed header; missing values are empty fields."""
    frame.to_csv(path, sep="\t", index=False, na_rep="")


def _atomic_dir(final: Path, fill) -> None:
    """Fill a temp dir beside ``final`` and rename it into place: readers never see a half-written export."""
    with atomic_dir(final) as tmp:
        fill(tmp)
