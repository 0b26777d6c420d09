"""Amazon datasets in P5's layout (jeykigung/P5 ``preprocess/data_preprocess_amazon.py``), as also shipped by
POD and RDRec (WangXFng/RDRec ``data/{beauty,sports,toys}/``). Files in ``{root}/{name}/``:

* ``sequential_data.txt`` (P5) or ``sequential.txt`` (RDRec) — required. One line per user:
  ``user item item …``, whitespace-separated integer indices, items in time order.
* ``datamaps.json`` — index → original id. P5 writes ``user2id``/``item2id`` (original → index) *and*
  ``id2user``/``id2item`` (index → original), plus ``attribute2id`` etc.; RDRec keeps only ``id2user``/
  ``id2item`` and its README calls them ``user2id``/``item2id``. The direction of each map is therefore
  checked from its contents (which side are the integer indices) rather than trusted from its name.
  Canonical ``user_id``/``item_id`` are the original reviewerID / ASIN strings. Without the file the indices
  themselves are the ids (a warning says so).
* ``negative_samples.txt`` (P5) or ``negative.txt`` (RDRec) — optional, same line format: the published
  evaluation negatives, kept as ``extras["negatives"]`` (user_id, item_ids) in canonical ids.
* ``explanation.json`` (RDRec/POD) — optional: ``{"train"|"val"|"test": [{user, item, explanation,
  feature}, …]}`` with integer indices. Its random 8:1:1 split is ignored; each explanation sentence becomes
  the ``review`` of its (user, item) interaction, and all records are kept as ``extras["explanations"]``
  (user_id, item_id, explanation, feature).
* ``review_splits.pkl`` (P5) — optional pickle ``{"train"|"val"|"test": [raw 2014 review dict, …],
  "train_indices": …}`` whose dicts carry ``reviewerID, asin, reviewText, overall, unixReviewTime,
  summary`` and, when P5 found one, ``explanation``/``feature``. It gives ``rating`` (``overall``) and, when
  there is no ``explanation.json``, ``review`` (``reviewText``). A pickle can run code when read: it is read only
  with ``data.source.trust_pickles=true`` (default false: its presence is an error naming that option).
* ``meta.json.gz`` (P5) — optional 2014 Amazon metadata, read by ``amazon_raw.read_meta`` for titles,
  brands and categories.

Timestamps: the sequence files carry no time, so ``timestamp`` is the position within the user's line
(0, 1, 2, …), which preserves the published order. If a (user, item) pair occurs several times, review
records are assigned to its occurrences in record order.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import defaultdict, deque
from pathlib import Path

import pandas as pd

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.sources.amazon_raw import read_meta
from rdrec.data.sources.base import Source
from rdrec.data.sources.trust import refuse_untrusted_pickle

log = logging.getLogger(__name__)

SEQUENTIAL_NAMES = ("sequential_data.txt", "sequential.txt")
NEGATIVE_NAMES = ("negative_samples.txt", "negative.txt")
SPLITS = ("train", "val", "test")


def read_index_lines(path: Path) -> list[tuple[int, int, list[int]]]:
    """``(line_number, user_index, [item_index, …])`` per non-blank line of a P5 sequence file."""
    out, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                raise DataError(path=path, line=line_no, field="items", expected="'user item item …' (a user index and at least one item index)", got=line.strip())
            user = _index(tokens[0], path, line_no, "user")
            items = [_index(t, path, line_no, f"item {k}") for k, t in enumerate(tokens[1:], start=1)]
            if user in seen:
                raise DataError(path=path, line=line_no, field="user", expected=f"one line per user (user {user} is also on line {seen[user]})", got=tokens[0])
            seen[user] = line_no
            out.append((line_no, user, items))
    return out


def _is_index(value) -> bool:
    text = str(value)
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts '²', which int() refuses


def _index(token: str, path: Path, line: int, field: str) -> int:
    if not _is_index(token):
        raise DataError(path=path, line=line, field=field, expected="a non-negative integer index", got=token)
    return int(token)


def index_map(maps: dict, kind: str, path: Path) -> dict[int, str] | None:
    """index → original id for ``kind`` ('user'/'item') from whichever of ``id2{kind}``/``{kind}2id`` exists."""
    for key, forward in ((f"id2{kind}", True), (f"{kind}2id", False)):
        table = maps.get(key)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise DataError(path=path, field=key, expected="an object mapping ids", got=type(table).__name__)
        keys_int = all(_is_index(k) for k in table)
        values_int = all(_is_index(v) for v in table.values())
        if keys_int != values_int:  # unambiguous: the integer side is the index, whatever the name says
            forward = keys_int
        pairs = table.items() if forward else ((v, k) for k, v in table.items())
        out = {}
        for idx, original in pairs:
            if not _is_index(idx):
                raise DataError(path=path, field=key, expected="integer indices", got=idx)
            out[int(idx)] = str(original)
        return out
    return None


class AmazonP5(Source):
    def __init__(self, root: str, name: str, trust_pickles: bool = False):
        self.root = root
        self.name = name
        self.trust_pickles = bool(trust_pickles)  # not in config(): it changes what may be read, not what is read

    @property
    def directory(self) -> Path:
        return Path(self.root) / self.name

    def _first(self, names: tuple[str, ...]) -> Path | None:
        return next((self.directory / n for n in names if (self.directory / n).is_file()), None)

    def files(self) -> list[Path]:
        seq = self._first(SEQUENTIAL_NAMES)
        if seq is None:
            raise DataError(
                path=self.directory / SEQUENTIAL_NAMES[0],
                expected=f"P5's sequence file ({' or '.join(SEQUENTIAL_NAMES)}) in {self.directory}",
                got="no such file",
            )
        optional = [self._first(NEGATIVE_NAMES)] + [
            self.directory / n for n in ("datamaps.json", "explanation.json", "review_splits.pkl", "meta.json.gz")
        ]
        return [seq] + [p for p in optional if p is not None and p.is_file()]

    def config(self) -> dict:
        return {"name": self.name}

    # ---- parsing -----------------------------------------------------------------------------------------
    def load(self) -> CanonicalDataset:
        seq_path = self.files()[0]
        users_map, items_map = self._datamaps()
        rows = read_index_lines(seq_path)
        user_ids, item_ids, positions = [], [], []
        for line_no, user, items in rows:
            uid = self._lookup(users_map, user, seq_path, line_no, "user")
            for pos, item in enumerate(items):
                user_ids.append(uid)
                item_ids.append(self._lookup(items_map, item, seq_path, line_no, f"item {pos + 1}"))
                positions.append(float(pos))
        inter = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "timestamp": positions})
        extras: dict[str, pd.DataFrame] = {}

        neg_path = self._first(NEGATIVE_NAMES)
        if neg_path is not None:
            negatives = read_index_lines(neg_path)
            extras["negatives"] = pd.DataFrame({
                "user_id": [self._lookup(users_map, u, neg_path, ln, "user") for ln, u, _ in negatives],
                "item_ids": [[self._lookup(items_map, i, neg_path, ln, f"item {k + 1}") for k, i in enumerate(its)]
                             for ln, u, its in negatives],
            })

        reviews = None
        exp_path = self.directory / "explanation.json"
        if exp_path.is_file():
            explanations = self._explanations(exp_path, users_map, items_map)
            extras["explanations"] = explanations
            reviews = explanations.rename(columns={"explanation": "review"})[["user_id", "item_id", "review"]]
        pkl_path = self.directory / "review_splits.pkl"
        if pkl_path.is_file():
            records = self._review_pickle(pkl_path)
            inter["rating"] = _assign(inter, records[["user_id", "item_id", "rating"]], "rating", float("nan"))
            if reviews is None:
                reviews = records[["user_id", "item_id", "review"]]
                with_exp = records[records["explanation"].notna()]
                if len(with_exp):
                    extras["explanations"] = with_exp[["user_id", "item_id", "explanation", "feature"]].reset_index(drop=True)
        if reviews is not None:
            inter["review"] = _assign(inter, reviews, "review", None)

        meta_path = self.directory / "meta.json.gz"
        items = read_meta(meta_path, keep=set(item_ids)) if meta_path.is_file() else None
        log.info("%s: %d users, %d interactions from %s", self.name, len(rows), len(inter), seq_path)
        return CanonicalDataset(self.name, None, items, inter, extras)

    def _datamaps(self) -> tuple[dict[int, str] | None, dict[int, str] | None]:
        path = self.directory / "datamaps.json"
        if not path.is_file():
            log.warning("%s: no datamaps.json in %s; the P5 indices are used as ids", self.name, self.directory)
            return None, None
        try:
            maps = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise DataError(path=path, line=getattr(err, "lineno", None), expected="valid JSON", got=str(err)) from None
        if not isinstance(maps, dict):
            raise DataError(path=path, expected="a JSON object with id2user/id2item", got=type(maps).__name__)
        out = []
        for kind in ("user", "item"):
            table = index_map(maps, kind, path)
            if table is None:
                raise DataError(path=path, field=f"id2{kind}", expected=f"an 'id2{kind}' or '{kind}2id' map", got=sorted(maps))
            out.append(table)
        return out[0], out[1]

    @staticmethod
    def _lookup(table: dict[int, str] | None, index: int, path: Path, line: int | None, field: str) -> str:
        if table is None:
            return str(index)
        try:
            return table[index]
        except KeyError:
            kind = "user" if field == "user" else "item"
            raise DataError(path=path, line=line, field=field, expected=f"an index listed in datamaps.json id2{kind}", got=index) from None

    def _explanations(self, path: Path, users_map, items_map) -> pd.DataFrame:
        data = _load_splits(path, json.loads(path.read_text(encoding="utf-8")))
        rows = []
        for split, k, rec in data:
            where = f"{path}[{split}][{k}]"
            for field in ("user", "item", "explanation"):
                if field not in rec:
                    raise DataError(path=where, field=field, expected="a value", got="missing")
            user = _index(str(rec["user"]), where, None, "user")
            item = _index(str(rec["item"]), where, None, "item")
            rows.append({
                "user_id": self._lookup(users_map, user, where, None, "user"),
                "item_id": self._lookup(items_map, item, where, None, "item"),
                "explanation": str(rec["explanation"]),
                "feature": None if rec.get("feature") is None else str(rec["feature"]),
            })
        return pd.DataFrame(rows, columns=["user_id", "item_id", "explanation", "feature"])

    def _review_pickle(self, path: Path) -> pd.DataFrame:
        refuse_untrusted_pickle(path, self.trust_pickles)
        with open(path, "rb") as f:
            data = _load_splits(path, pickle.load(f))
        rows = []
        for split, k, rec in data:
            where = f"{path}[{split}][{k}]"
            for field in ("reviewerID", "asin"):
                if not rec.get(field):
                    raise DataError(path=where, field=field, expected="the original id (str)", got="missing")
            try:
                rating = float(rec["overall"]) if rec.get("overall") is not None else float("nan")
            except (TypeError, ValueError):
                raise DataError(path=where, field="overall", expected="a rating (number)", got=rec["overall"]) from None
            rows.append({
                "user_id": str(rec["reviewerID"]),
                "item_id": str(rec["asin"]),
                "rating": rating,
                "review": str(rec.get("reviewText") or "").strip() or None,
                "explanation": rec.get("explanation"),
                "feature": rec.get("feature"),
            })
        return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "review", "explanation", "feature"])


def _load_splits(path: Path, data) -> list[tuple[str, int, dict]]:
    """``(split, position, record)`` for the train/val/test lists of an RDRec/P5 review file."""
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise DataError(path=path, expected="a mapping with 'train'/'val'/'test' lists", got=type(data).__name__)
    out = []
    for split in SPLITS:
        records = data.get(split, [])
        if not isinstance(records, list):
            raise DataError(path=path, field=split, expected="a list of records", got=type(records).__name__)
        for k, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(path=f"{path}[{split}][{k}]", expected="a record (dict)", got=rec)
            out.append((split, k, rec))
    return out


def _assign(inter: pd.DataFrame, records: pd.DataFrame, column: str, default) -> list:
    """Values of ``column`` from per-(user, item) ``records`` laid onto ``inter``'s rows; a pair occurring n
    times takes its first n records in order; unmatched records are counted and logged, not kept."""
    queues: dict[tuple[str, str], deque] = defaultdict(deque)
    for user, item, value in records[["user_id", "item_id", column]].itertuples(index=False):
        queues[(user, item)].append(value)
    out = []
    for user, item in inter[["user_id", "item_id"]].itertuples(index=False):
        queue = queues.get((user, item))
        out.append(queue.popleft() if queue else default)
    left = sum(len(q) for q in queues.values())
    if left:
        log.warning("%d %s records match no interaction in the sequence file and were ignored", left, column)
    return out
