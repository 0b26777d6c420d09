"""Steam, in the two published layouts whose format could be pinned down from the code that reads them.

``SteamSASRec`` — SASRec's ``Steam.txt`` (kang205/SASRec; the writer is ``data/DataProcessing.py``, which
writes ``'%d %d\\n' % (user, item)`` per interaction, each user's lines in time order; 1-based integer
indices, no titles, no times). ``timestamp`` is the position within the user's lines.

``SteamLLaRA`` — the LLaRA release used by LLaRA and DELRec (ljy0ustc/LLaRA ``data/steam_data.py``, data
from huggingface.co/datasets/joyliao7777/LLaRA ``steam/``; DELRec's README points to the same files):
``id2name.txt`` with lines ``id::game title`` and pandas pickles ``train_data.df``, ``Val_data.df``,
``Test_data.df`` with columns ``seq`` (the last ≤10 item ids, padded with ``padding_item_id`` = 3581 = the
number of games), ``len_seq`` and ``next`` (the target id). The frames carry no user id, so each row is read
as one independent sequence ``seq`` (padding removed) + ``next`` — exactly the sample LLaRA scores — with
user id ``{frame}:{row}`` and timestamps 0, 1, … . Which frames to read is configurable (default: the test
frame only; the train frame holds overlapping prefixes of the same histories, so mixing frames repeats
sequences). Titles come from ``id2name.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.sources.base import Source
from rdrec.data.sources.trust import refuse_untrusted_pickle

log = logging.getLogger(__name__)


class SteamSASRec(Source):
    def __init__(self, path: str, name: str = "steam"):
        self.path = path
        self.name = name

    def files(self) -> list[Path]:
        path = Path(self.path)
        if not path.is_file():
            raise DataError(path=path, expected="SASRec's Steam.txt ('user item' per line)", got="no such file")
        return [path]

    def load(self) -> CanonicalDataset:
        path = self.files()[0]
        users, items = [], []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) != 2:
                    raise DataError(path=path, line=line_no, expected="2 fields 'user item'", got=line.strip())
                for field, token in zip(("user", "item"), tokens):
                    if not (token.isascii() and token.isdigit()):  # isdigit alone accepts '²'
                        raise DataError(path=path, line=line_no, field=field, expected="an integer index", got=token)
                users.append(tokens[0])
                items.append(tokens[1])
        inter = pd.DataFrame({"user_id": users, "item_id": items})
        inter["timestamp"] = inter.groupby("user_id", sort=False).cumcount().astype("float64")
        return CanonicalDataset(self.name, None, None, inter)


class SteamLLaRA(Source):
    def __init__(
        self,
        root: str,
        frames: list[str] | tuple[str, ...] = ("Test_data.df",),
        padding_item_id: int | None = None,
        name: str = "steam",
        trust_pickles: bool = False,
    ):
        self.root = root
        self.trust_pickles = bool(trust_pickles)  # not in config(): it changes what may be read, not what is read
        self.frames = list(frames)
        self.padding_item_id = padding_item_id
        self.name = name

    def files(self) -> list[Path]:
        paths = [Path(self.root) / "id2name.txt"] + [Path(self.root) / f for f in self.frames]
        for path in paths:
            if not path.is_file():
                raise DataError(path=path, expected="LLaRA's Steam files (id2name.txt and the *_data.df pickles)", got="no such file")
        return paths

    def config(self) -> dict:
        return {"frames": self.frames, "padding_item_id": self.padding_item_id}

    def load(self) -> CanonicalDataset:
        names_path, *frame_paths = self.files()
        titles = read_id2name(names_path)
        # LLaRA hard-codes the padding id as the number of games (3581 for Steam), one past the last id.
        padding = self.padding_item_id if self.padding_item_id is not None else max(titles) + 1
        users, items, positions = [], [], []
        for path in frame_paths:
            refuse_untrusted_pickle(path, self.trust_pickles)
            frame = pd.read_pickle(path)  # a pandas pickle: read only with trust_pickles=true
            for column in ("seq", "next"):
                if column not in frame.columns:
                    raise DataError(path=path, field=column, expected="a column of LLaRA's frame", got=list(frame.columns))
            for row, (seq, nxt) in enumerate(zip(frame["seq"], frame["next"])):
                where = f"{path}[row {row}]"
                sequence = [int(i) for i in seq if int(i) != padding] + [int(nxt)]
                for pos, item in enumerate(sequence):
                    if item not in titles:
                        raise DataError(path=where, field="next" if pos == len(sequence) - 1 else "seq",
                                        expected=f"a game id listed in {names_path.name}", got=item)
                    users.append(f"{path.name}:{row}")
                    items.append(str(item))
                    positions.append(float(pos))
        inter = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": positions})
        catalog = pd.DataFrame({"item_id": [str(i) for i in titles], "title": list(titles.values())})
        log.info("%s: %d sequences from %s", self.name, inter["user_id"].nunique(), [p.name for p in frame_paths])
        return CanonicalDataset(self.name, None, catalog, inter)


def read_id2name(path: Path) -> dict[int, str]:
    """``id::title`` lines → {id: title}; a title may itself contain '::' (only the first one separates)."""
    out: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            idx, sep, title = line.partition("::")
            if not sep:
                raise DataError(path=path, line=line_no, expected="'id::title'", got=line)
            if not (idx.strip().isascii() and idx.strip().isdigit()):
                raise DataError(path=path, line=line_no, field="id", expected="an integer id", got=idx)
            out[int(idx)] = title.strip()
    if not out:
        raise DataError(path=path, expected="at least one 'id::title' line", got="an empty file")
    return out
