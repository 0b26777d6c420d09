"""Which history a SLIM rationale was written from, and so where in training it may be fused (the leak rule).

A rationale is written from a window of one user's training sequence that ends at ``window_end`` (the number
of training items before the window's end: the history is ``seq[window_end - history_len : window_end]``). It
may be fused only where the recommender predicts an item *after* that window: at a training target whose
0-based index in the user's training sequence is ``>= window_end``, and at validation/test, whose targets lie
after the whole training sequence. A rationale that names or describes a training item can therefore never be
shown to the model while it learns to predict that item.

Window ends of an export, per user, in this order of precedence:

1. a ``window_end`` column in the ``slim_users`` table (an export that records it);
2. ``slim_window: {exclude_last: k}`` in the export's ``meta.json``: the prompt showed the training sequence
   cut ``k`` items short (``experiments/slim/run.py teacher --exclude-last k``): ``window_end = len(seq) - k``;
3. otherwise the SlimFamily default (``rdrec/teacher/prompts.py``: the latest ``history_len`` training items):
   ``window_end = len(seq)``, whatever ``history_len`` was. Such a rationale is never fused at a training
   position, only at validation/test.

Unparsed answers (``failures``) follow the same rule as parsed ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from rdrec.errors import DataError


def window_ends(export_dir: str | Path, sequences, users, loaded: tuple | None = None) -> dict[int, int]:
    """``{user: window_end}`` for ``users`` of the export at ``export_dir``; ``sequences[u]`` is user ``u``'s
    training sequence (``TrainView.sequences``). ``loaded``: the export's ``(tables, meta)`` when the caller has
    read them already (``rdrec.teacher.export.load_checked``)."""
    from rdrec.teacher.export import load

    export_dir = Path(export_dir)
    meta_path = export_dir / "meta.json"
    if loaded is not None:
        tables, meta = loaded
    else:
        tables, meta = load(export_dir), (json.loads(meta_path.read_text()) if meta_path.is_file() else {})
    window = meta.get("slim_window") or {}
    k = window.get("exclude_last", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise DataError(path=meta_path, field="slim_window.exclude_last", expected="an integer >= 0", got=repr(k))
    recorded: dict[int, int] = {}
    table = tables["slim_users"]
    if "window_end" in table.column_names:
        recorded = {int(u): int(e) for u, e in zip(table["user"], table["window_end"])}
    out = {}
    for user in users:
        n = len(sequences[int(user)])
        end = recorded.get(int(user), max(n - k, 0))
        if not 0 <= end <= n:
            raise DataError(path=export_dir / "tables" / "slim_users", field="window_end",
                            expected=f"0..{n} (user {user}'s training length)", got=end)
        out[int(user)] = end
    return out


class PrefixView:
    """A prepared dataset whose training sequences are cut ``exclude_last`` items short, for writing rationales
    from a prefix (``experiments/slim/run.py teacher --exclude-last k``). It is other data, so it has its own
    ``fingerprint``: rationale store keys hold the fingerprint, and a prefix prompt must never be answered by the
    stored full-window answer of the same user (or the other way round). Exports of its rationales name the
    split's own fingerprint in their meta (with ``slim_window: {exclude_last: k}``), since their ids are the
    split's."""

    def __init__(self, prepared, exclude_last: int):
        if exclude_last < 1:
            raise ValueError(f"PrefixView: exclude_last must be >= 1, got {exclude_last}")
        self.prepared, self.exclude_last = prepared, exclude_last
        self.name = prepared.name
        self.fingerprint = f"{prepared.fingerprint}:exclude_last={exclude_last}"

    def train_view(self):
        import dataclasses

        view, k = self.prepared.train_view(), self.exclude_last
        return dataclasses.replace(view, sequences=[s[: max(len(s) - k, 0)] for s in view.sequences])
