"""Raw Amazon review dumps (McAuley et al.): a 5-core review file plus optional item metadata.

Both files hold one record per line, gzipped or not (detected from the bytes, not the file name):

* 2014 dump (``reviews_Beauty_5.json.gz``, ``meta_Beauty.json.gz``): reviews are strict JSON, metadata
  lines are Python dict literals (single quotes) — read with ``json`` first, then ``ast.literal_eval``.
  Reviews: ``reviewerID, asin, reviewerName, helpful, reviewText, overall, summary, unixReviewTime,
  reviewTime``. Metadata: ``asin, title, price, imUrl, related, salesRank, brand, categories`` (a list of
  category paths, each a list) and sometimes ``description`` (str).
* 2018 dump (``Video_Games_5.json.gz``, ``meta_Video_Games.json.gz``): strict JSON. Reviews add ``vote,
  style, verified, image``; metadata has ``title, brand, category`` (one flat path), ``description`` (a
  list of paragraphs, or a str), ``main_cat, date, price, feature, rank, also_buy, …``.

Choices: the interaction's review text is ``reviewText`` alone (the ``summary`` is a headline; set
``summary=True`` to prepend it as "summary. reviewText"). Categories are the union of all category paths in
first-seen order. ``year`` comes from a 4-digit year in 2018's ``date`` (2014 metadata has no date).
Interactions keep the file's order; ``unixReviewTime`` (day resolution, so many ties) is the timestamp.

Files can be gigabytes: both are streamed line by line, metadata is kept only for items that occur in the
reviews (other products' lines are skipped unparsed), and a progress bar (on compressed bytes read) is shown
for files over 64 MB.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.sources.base import Source

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 64 << 20
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']*)["']""")
_BY = re.compile(r"^by\s+")  # 2018 brands are sometimes scraped as "by\n    \n    Ubisoft"


# ---- record streaming ---------------------------------------------------------------------------------------
def iter_records(
    path: str | Path, desc: str | None = None, wanted: Callable[[str], bool] | None = None
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSON-lines / dict-literal-lines file;
    lines for which ``wanted(line)`` is false are skipped without being parsed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path=path, expected="an Amazon review or metadata file", got="no such file")
    size = path.stat().st_size
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = io.TextIOWrapper(gzip.GzipFile(fileobj=raw) if gz else raw, encoding="utf-8")
        with tqdm(total=size, unit="B", unit_scale=True, desc=desc or path.name, disable=size < PROGRESS_MIN_BYTES) as bar:
            literal_first = False  # a file is either JSON or dict literals: try the one that worked last first
            for line_no, line in enumerate(stream, start=1):
                if line_no % 10_000 == 0:  # position in the compressed stream: cheap, and right for .gz too
                    bar.update(raw.tell() - bar.n)
                line = line.strip()
                if line and (wanted is None or wanted(line)):
                    record, literal_first = parse_record(line, path, line_no, literal_first)
                    yield line_no, record
            bar.update(size - bar.n)


def _json(line: str):
    return json.loads(line)


def _literal(line: str):
    return ast.literal_eval(line)


def parse_record(line: str, path: Path, line_no: int, literal_first: bool = False) -> tuple[dict, bool]:
    """One record from one line; also says whether it was a Python literal (2014 metadata uses repr)."""
    parsers = (_literal, _json) if literal_first else (_json, _literal)
    for parser in parsers:
        try:
            record = parser(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue  # json.JSONDecodeError is a ValueError
        if not isinstance(record, dict):
            raise DataError(path=path, line=line_no, expected="an object/dict per line", got=line)
        return record, parser is _literal
    raise DataError(path=path, line=line_no, expected="one JSON object or Python dict literal per line", got=line)


def _required(record: dict, field: str, path: Path, line: int, expected: str):
    value = record.get(field)
    if value is None or value == "":
        raise DataError(path=path, line=line, field=field, expected=expected, got="missing")
    return value


# ---- reviews --------------------------------------------------------------------------------------------------
def read_reviews(path: str | Path, summary: bool = False) -> pd.DataFrame:
    """Interactions (user_id, item_id, timestamp, rating, review) in file order."""
    path = Path(path)
    users, items, times, ratings, texts = [], [], [], [], []
    for line, rec in iter_records(path, desc=f"reviews {path.name}"):
        users.append(str(_required(rec, "reviewerID", path, line, "the reviewer id (str)")))
        items.append(str(_required(rec, "asin", path, line, "the product ASIN (str)")))
        when = _required(rec, "unixReviewTime", path, line, "a unix time in seconds (int)")
        try:
            times.append(float(when))
        except (TypeError, ValueError):
            raise DataError(path=path, line=line, field="unixReviewTime", expected="a unix time in seconds (int)", got=when) from None
        ratings.append(_optional_float(rec.get("overall"), path, line, "overall"))
        texts.append(_review_text(rec, summary))
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "rating": ratings, "review": texts})


def _optional_float(value, path: Path, line: int, field: str) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(path=path, line=line, field=field, expected="a number", got=value) from None


def _review_text(rec: dict, summary: bool) -> str | None:
    text = str(rec.get("reviewText") or "").strip()
    head = str(rec.get("summary") or "").strip() if summary else ""
    if head and text:
        return f"{head.rstrip('.')}. {text}"
    return head or text or None


# ---- metadata -------------------------------------------------------------------------------------------------
def read_meta(path: str | Path, keep: Iterable[str] | None = None) -> pd.DataFrame:
    """Item rows (item_id, title, brand, categories, description, year) for the ASINs in ``keep`` (all when
    None); the first record of a repeated ASIN wins."""
    path = Path(path)
    keep = set(keep) if keep is not None else None
    rows: dict[str, dict] = {}
    for line, rec in iter_records(path, desc=f"metadata {path.name}", wanted=_asin_filter(keep)):
        asin = str(_required(rec, "asin", path, line, "the product ASIN (str)"))
        if (keep is not None and asin not in keep) or asin in rows:
            continue
        rows[asin] = {
            "item_id": asin,
            "title": _text(rec.get("title")),
            "brand": _BY.sub("", _text(rec.get("brand"))),
            "categories": _categories(rec),
            "description": _text(rec.get("description")),
            "year": _year(rec.get("date")),
        }
    columns = ["item_id", "title", "brand", "categories", "description", "year"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def _asin_filter(keep: set[str] | None) -> Callable[[str], bool] | None:
    """Metadata files list every product of a category (hundreds of thousands of lines) while a 5-core
    dataset needs a few thousand; parsing a dict literal costs ~0.2 ms, so lines whose ``asin`` is visibly
    not needed are skipped unparsed (a line where no asin can be seen is parsed, and checked, as usual)."""
    if keep is None:
        return None

    def wanted(line: str) -> bool:
        match = _ASIN.search(line)
        return match is None or match.group(1) in keep

    return wanted


def _text(value) -> str:
    if isinstance(value, (list, tuple)):  # 2018 descriptions are lists of paragraphs
        return " ".join(_text(v) for v in value if _text(v))
    return "" if value is None else " ".join(str(value).split())  # collapse scraped newlines/indents


def _categories(rec: dict) -> list[str]:
    paths = rec.get("categories")  # 2014: [["Beauty", "Skin Care", "Face"], ["Beauty", "Makeup"]]
    if paths is None:
        paths = [rec.get("category") or []]  # 2018: one flat path
    out: list[str] = []
    for cat_path in paths:
        for cat in [cat_path] if isinstance(cat_path, str) else cat_path:
            cat = str(cat).strip()
            if cat and cat not in out:
                out.append(cat)
    return out


def _year(date) -> int | None:
    match = _YEAR.search(str(date)) if date else None
    return int(match.group(1)) if match else None


# ---- the source -----------------------------------------------------------------------------------------------
class AmazonReviews(Source):
    """A raw Amazon 5-core review file (any category: Video Games, Grocery & Gourmet Food, Home & Kitchen, …)
    and, optionally, the category's metadata file for item titles, brands and categories."""

    def __init__(self, reviews: str, meta: str | None = None, name: str = "amazon", summary: bool = False):
        self.reviews = reviews
        self.meta = meta
        self.name = name
        self.summary = summary

    def files(self) -> list[Path]:
        paths = [Path(self.reviews)] + ([Path(self.meta)] if self.meta else [])
        for path in paths:
            if not path.is_file():
                raise DataError(path=path, expected="an Amazon review/metadata file (JSON lines, optionally .gz)", got="no such file")
        return paths

    def config(self) -> dict:
        return {"summary": self.summary, "meta": self.meta is not None}

    def load(self) -> CanonicalDataset:
        paths = self.files()
        inter = read_reviews(paths[0], summary=self.summary)
        items = read_meta(paths[1], keep=inter["item_id"].unique()) if self.meta else None
        log.info("%s: %d reviews, %d items with metadata", self.name, len(inter), 0 if items is None else len(items))
        return CanonicalDataset(self.name, None, items, inter)
