"""SLIM's texts: item text from the training view, user rationales from a rationale export, and their vectors.

- ``item_texts(view)``: one string per item id (title + categories/genres + brand + year), item-level text, so
  allowed in training (docs/protocol.md); index 0 is "".
- ``load_rationales(export_dir, prepared, field)``: ``{user: text}`` from the ``slim_users`` table of a rationale
  export (``rdrec.teacher.export``; the teacher's or the student's, same format). ``field`` is the reasoning
  step: ``preferences`` (1), ``categories`` (2), ``items`` (3), or ``rationale`` (all three). The export must have
  been made for this very prepared dataset (its fingerprint): ids of another split would silently mean other
  users.
- ``encode_cached(encoder, texts, cache_dir)``: vectors of a list of texts, cached in a ``.pt`` file keyed by the
  encoder and the texts, written atomically (``atomic_file``); an unreadable cache file is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from rdrec.errors import DataError
from rdrec.data.prepared import PreparedDataset, TrainView
from rdrec.teacher.export import load_checked
from rdrec.utils.atomic import atomic_file

log = logging.getLogger(__name__)

STEPS = {"1": "preferences", "2": "categories", "3": "items", "all": "rationale",
         "preferences": "preferences", "categories": "categories", "items": "items", "rationale": "rationale"}
ITEM_FIELDS = ("title", "categories", "brand", "year")


def item_texts(view: TrainView, fields=ITEM_FIELDS) -> list[str]:
    """``texts[item]`` for item ids 0..num_items, e.g. "Toy Story. Genres: Animation, Comedy. Year: 1995"."""
    unknown = set(fields) - {"title", "categories", "brand", "year", "description"}
    if unknown:
        raise ValueError(f"item text fields: unknown {sorted(unknown)}; expected title, categories, brand, year, description")
    out = [""] * (view.num_items + 1)
    for row in view.items.itertuples(index=False):
        parts = []
        for f in fields:
            value = getattr(row, f)
            if f == "categories":
                cats = [str(c) for c in value] if isinstance(value, (list, tuple, np.ndarray)) else []
                parts.append(f"Categories: {', '.join(cats)}" if cats else "")
            elif f == "year":
                parts.append("" if value is None or str(value) in ("<NA>", "nan", "") else f"Year: {int(value)}")
            elif f == "brand":
                parts.append(f"Brand: {value}" if str(value or "").strip() else "")
            else:
                parts.append(str(value or "").strip())
        out[int(row.item)] = ". ".join(p for p in parts if p)
    return out


def load_rationales(export_dir: str | Path, prepared: PreparedDataset, field: str = "rationale",
                    unparsed: bool = False, loaded: tuple | None = None) -> dict[int, str]:
    """``{user id: text of the chosen reasoning step}`` from an export's ``slim_users`` table.

    ``unparsed``: users whose answer never parsed into three steps (the export's ``failures``) get their last
    raw answer as the whole rationale: it is still the model's reasoning about the user, just not split into
    steps, so only ``field="rationale"`` can use it."""
    if str(field) not in STEPS:
        raise ValueError(f"rationale step: expected one of {sorted(STEPS)}, got {field!r}")
    column = STEPS[str(field)]
    export_dir = Path(export_dir)
    tables, _ = loaded if loaded is not None else load_checked(export_dir, prepared.fingerprint)
    table = tables["slim_users"]
    out: dict[int, str] = {}
    for n, row in enumerate(table):
        user = int(row["user"])
        if not 1 <= user <= prepared.num_users:
            raise DataError(path=export_dir / "tables" / "slim_users", line=n, field="user",
                            expected=f"a user id in 1..{prepared.num_users}", got=user)
        out[user] = str(row[column] or "")
    if unparsed:
        if column != "rationale":
            raise ValueError(f"unparsed rationales have no steps: use rationale_step=all, not {field!r}")
        for row in tables["failures"]:
            user = int(row["user"])
            if row["family"] == "slim" and user not in out and 1 <= user <= prepared.num_users and row["text"]:
                out[user] = str(row["text"])
    return out


def encode_cached(encoder, texts: list[str], cache_dir: str | Path | None, desc: str = "encoding") -> torch.Tensor:
    """``encoder.encode(texts)``, cached under ``cache_dir/<sha>.pt`` (key: encoder description + texts)."""
    if cache_dir is None:
        return encoder.encode(texts, desc=desc)
    key = hashlib.sha256(json.dumps([encoder.describe(), texts]).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        try:
            vectors = torch.load(path, weights_only=True)
            if isinstance(vectors, torch.Tensor) and len(vectors) == len(texts):
                return vectors
            log.warning("text vector cache %s holds another shape; encoding again", path)
        except Exception as err:  # a truncated or damaged file: zip/pickle errors of every kind
            log.warning("text vector cache %s is unreadable (%s: %s); encoding again", path, type(err).__name__, err)
    vectors = encoder.encode(texts, desc=desc)
    with atomic_file(path, "wb") as f:
        torch.save(vectors, f)
    log.info("cached %d text vectors at %s", len(texts), path)
    return vectors
