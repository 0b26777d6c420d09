"""RecBole atomic files (``.inter``, ``.item``, ``.user``, …) and a generic source built on them.

Format (RecBole docs, "Atomic Files"): one tab-separated header line of ``name:type`` fields, with type one of
``token``, ``token_seq``, ``float``, ``float_seq``; then one record per line. ``*_seq`` values are lists
joined by a space. Files are UTF-8 and unquoted (a title may contain commas or quotes as plain text).

``read_atomic`` parses any such file by header *names*, so column order never matters. ``RecBoleDataset``
turns a directory ``{root}/{dataset}/{dataset}.inter|.item|.user`` into a ``CanonicalDataset``; users who
bring another RecBole dataset point it at their directory and, where the item fields are named unusually,
say which field holds the title/categories/… .
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.sources.base import Source

log = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

# Field names RecBole's own converted datasets use for the canonical item columns (first match wins).
ITEM_FIELD_GUESSES = {
    "title": ("title", "movie_title", "item_name", "name", "app_name"),
    "categories": ("categories", "class", "genre", "genres", "category"),
    "brand": ("brand", "publisher", "developer"),
    "description": ("description",),
    "year": ("release_year", "year"),
}


def read_header(path: str | Path, field_separator: str = "\t") -> list[tuple[str, str]]:
    """The ``(name, type)`` pairs of an atomic file's header line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        raise _not_text(path) from None
    return _parse_header(path, header, field_separator)


def _not_text(path: Path) -> DataError:
    """The error for a file that is not UTF-8 text, at its first undecodable line (found on this error path only)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return DataError(path=path, line=line_no, expected="UTF-8 text (a RecBole atomic file, not a compressed "
                                 "or binary one)", got=f"byte {raw[err.start]:#04x} at column {err.start + 1}")
    return DataError(path=path, expected="UTF-8 text", got="undecodable bytes")


def _parse_header(path: Path, header: str, sep: str) -> list[tuple[str, str]]:
    fields = []
    for raw in header.split(sep):
        name, colon, ftype = raw.rpartition(":")
        if not colon or not name or ftype not in FIELD_TYPES:
            raise DataError(
                path=path, line=1, field=raw, expected=f"a header field 'name:type' with type in {FIELD_TYPES}", got=raw
            )
        fields.append((name, ftype))
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        raise DataError(path=path, line=1, expected="distinct field names in the header", got=header)
    return fields


def read_atomic(
    path: str | Path,
    *,
    split_seqs: bool = False,
    field_separator: str = "\t",
    seq_separator: str = " ",
) -> pd.DataFrame:
    """Read one atomic file into a DataFrame whose columns are the header names without their types.

    ``token`` → str; ``float`` → float64 (empty → NaN); ``*_seq`` → the raw string, or a list (of str /
    float) when ``split_seqs``. Raw strings are the default because a ``token_seq`` is often free text
    (ML-100K's ``movie_title``) that must not be split. ``df.attrs["recbole_types"]`` maps name → type.
    Raises ``DataError`` naming the line and field for a wrong field count or a non-numeric float.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path=path, expected="a RecBole atomic file", got="no such file")
    try:
        return _read_atomic(path, split_seqs, field_separator, seq_separator)
    except UnicodeDecodeError:
        raise _not_text(path) from None


def _read_atomic(path: Path, split_seqs: bool, field_separator: str, seq_separator: str) -> pd.DataFrame:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        if not header:
            raise DataError(path=path, line=1, expected="a header line of 'name:type' fields", got="an empty file")
        fields = _parse_header(path, header, field_separator)
        columns: list[list] = [[] for _ in fields]
        # A plain loop (not pandas.read_csv) so a short or long row is reported at its line; pandas would
        # silently pad short rows with empty strings.
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            values = line.split(field_separator)
            if len(values) != len(fields):
                raise DataError(
                    path=path, line=line_no, expected=f"{len(fields)} tab-separated fields", got=f"{len(values)}"
                )
            for col, (name, ftype), value in zip(columns, fields, values):
                col.append(_convert(value, ftype, split_seqs, seq_separator, path, line_no, name))
    frame = pd.DataFrame({name: col for (name, _), col in zip(fields, columns)})
    for name, ftype in fields:
        if ftype == "float":
            frame[name] = frame[name].astype("float64")
    frame.attrs["recbole_types"] = dict(fields)
    return frame


def _convert(value: str, ftype: str, split: bool, seq_sep: str, path: Path, line: int, name: str):
    if ftype == "token":
        return value
    if ftype == "float":
        return _to_float(value, path, line, name)
    if not split:
        return value
    parts = [p for p in value.split(seq_sep) if p]
    if ftype == "float_seq":
        return [_to_float(p, path, line, name) for p in parts]
    return parts


def _to_float(value: str, path: Path, line: int, name: str) -> float:
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise DataError(path=path, line=line, field=name, expected="a number (float field)", got=value) from None


class RecBoleDataset(Source):
    """Any RecBole dataset directory ``{root}/{dataset}/`` with ``{dataset}.inter`` and optional ``.item`` /
    ``.user`` files.

    The interaction file needs ``user_id``, ``item_id`` and ``timestamp`` fields (names configurable): the split
    orders each user's interactions by time. A file without timestamps is refused unless ``file_order=True``
    says its rows are in time order; then the timestamp is the position within the user's rows. ``rating`` is
    used when present, else it is NaN. Item text columns are taken from the fields named by the ``*_field`` arguments,
    or guessed from RecBole's usual names (``ITEM_FIELD_GUESSES``); ``categories_field`` is split on spaces.
    Every ``.user`` field other than the id becomes a string user attribute.
    """

    def __init__(
        self,
        root: str,
        dataset: str,
        user_field: str = "user_id",
        item_field: str = "item_id",
        rating_field: str = "rating",
        timestamp_field: str = "timestamp",
        title_field: str | None = None,
        categories_field: str | None = None,
        brand_field: str | None = None,
        description_field: str | None = None,
        year_field: str | None = None,
        name: str | None = None,
        file_order: bool = False,
    ):
        self.root = root
        self.dataset = dataset
        self.name = name or dataset
        self.user_field, self.item_field = user_field, item_field
        self.rating_field, self.timestamp_field = rating_field, timestamp_field
        self.file_order = bool(file_order)
        self.item_fields = {
            "title": title_field,
            "categories": categories_field,
            "brand": brand_field,
            "description": description_field,
            "year": year_field,
        }

    # ---- files -------------------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return Path(self.root) / self.dataset

    def path(self, suffix: str) -> Path:
        return self.directory / f"{self.dataset}.{suffix}"

    def files(self) -> list[Path]:
        inter = self.path("inter")
        if not inter.is_file():
            raise DataError(path=inter, expected=f"the RecBole interaction file of dataset '{self.dataset}'", got="no such file")
        return [p for p in (inter, self.path("item"), self.path("user")) if p.is_file()]

    def config(self) -> dict:
        fields = {k: v for k, v in self.item_fields.items() if v is not None}
        return {"dataset": self.dataset, "user_field": self.user_field, "item_field": self.item_field,
                "rating_field": self.rating_field, "timestamp_field": self.timestamp_field,
                "file_order": self.file_order, **fields}

    # ---- parsing -----------------------------------------------------------------------------------------
    def load(self) -> CanonicalDataset:
        files = self.files()
        inter_path = files[0]
        inter = read_atomic(inter_path)
        for field in (self.user_field, self.item_field):
            if field not in inter.columns:
                raise DataError(path=inter_path, line=1, field=field, expected="this field in the header", got=list(inter.columns))
        out = pd.DataFrame({"user_id": inter[self.user_field], "item_id": inter[self.item_field]})
        if self.timestamp_field in inter.columns:
            out["timestamp"] = inter[self.timestamp_field]
        elif self.file_order:  # canonical contract: no time → position in the user's (file-ordered) sequence
            out["timestamp"] = out.groupby("user_id", sort=False).cumcount().astype("float64")
        else:
            raise DataError(
                path=inter_path, line=1, field=self.timestamp_field,
                expected="this field in the header (the split orders each user's interactions by time); if the rows "
                         "are already in time order, set file_order=true", got=list(inter.columns))
        if self.rating_field in inter.columns:
            out["rating"] = inter[self.rating_field]
        items = self._items() if self.path("item").is_file() else None
        users = self._users() if self.path("user").is_file() else None
        log.info("%s: read %d interactions from %s", self.name, len(out), inter_path)
        return CanonicalDataset(self.name, users, items, out)

    def _items(self) -> pd.DataFrame:
        path = self.path("item")
        raw = read_atomic(path)
        if self.item_field not in raw.columns:
            raise DataError(path=path, line=1, field=self.item_field, expected="this field in the header", got=list(raw.columns))
        items = pd.DataFrame({"item_id": raw[self.item_field]})
        for column, field in self.item_fields.items():
            field = field or next((g for g in ITEM_FIELD_GUESSES[column] if g in raw.columns), None)
            if field is None:
                continue
            if field not in raw.columns:
                raise DataError(path=path, line=1, field=field, expected=f"this field in the header (for '{column}')", got=list(raw.columns))
            values = raw[field]
            if column == "categories":
                values = [v if isinstance(v, list) else [t for t in str(v).split(" ") if t] for v in values]
            items[column] = values
        return items

    def _users(self) -> pd.DataFrame:
        path = self.path("user")
        raw = read_atomic(path)
        if self.user_field not in raw.columns:
            raise DataError(path=path, line=1, field=self.user_field, expected="this field in the header", got=list(raw.columns))
        return raw.rename(columns={self.user_field: "user_id"})
