"""DELRec's prompt texts: recommendation, Temporal Analysis (TA) and Recommendation Pattern Simulating (RPS).

Every prompt holds the soft-prompt slot once, as "the recommendation pattern of {model} is <soft_prompt>", where
the distilled vectors go (``rdrec.methods.delrec.scoring.SOFT_SLOT``). Items appear as their display titles
(title and year when the year is known, which tells most same-named items apart). Candidates are listed in the
order given: callers shuffle them (seeded) so the answer's position carries no signal.

- ``rec``: history → which candidate comes next (stage 2, and evaluation);
- ``ta``:  history up to t-2 and the item at t → which candidate was consumed in between (t-1);
- ``rps``: history → which candidate the SR model ranks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from rdrec.methods.delrec.scoring import SOFT_SLOT


@dataclass
class PromptTemplates:
    rec: str = (
        "A user consumed these items, oldest first: {history}. The recommendation pattern of {model} is "
        "{soft}. Candidates: {candidates}. The user's next item is:"
    )
    ta: str = (
        "A user consumed these items, oldest first: {history}; then one more item; then {next}. The "
        "recommendation pattern of {model} is {soft}. Candidates: {candidates}. The item consumed just before "
        "{next} is:"
    )
    rps: str = (
        "A user consumed these items, oldest first: {history}. The recommendation pattern of {model} is "
        "{soft}. Candidates: {candidates}. {model} recommends:"
    )
    separator: str = "; "


def display_titles(items: pd.DataFrame) -> list[str]:
    """Text of every item id (index = id; 0 is padding): "title (year)", or the title alone, or the source id."""
    out = [""] * (int(items["item"].max()) + 1 if len(items) else 1)
    for item, title, year, source_id in zip(items["item"], items["title"], items["year"], items["item_id"]):
        title = str(title).strip() or f"item {source_id}"
        out[int(item)] = f"{title} ({int(year)})" if pd.notna(year) and f"({int(year)})" not in title else title
    return out


class DelRecPrompts:
    def __init__(self, titles: Sequence[str], model_name: str = "SASRec", templates: PromptTemplates | dict | None = None,
                 max_history: int = 10):
        self.titles = list(titles)
        self.model_name = model_name
        self.templates = templates if isinstance(templates, PromptTemplates) else PromptTemplates(**(templates or {}))
        self.max_history = int(max_history)

    def _list(self, items: Sequence[int]) -> str:
        return self.templates.separator.join(self.titles[int(i)] for i in items if int(i) > 0)

    def _history(self, history: Sequence[int]) -> str:
        items = [int(i) for i in history if int(i) > 0]
        return self._list(items[-self.max_history:] if self.max_history > 0 else [])

    def rec(self, history: Sequence[int], candidates: Sequence[int]) -> str:
        return self.templates.rec.format(history=self._history(history), candidates=self._list(candidates),
                                         model=self.model_name, soft=SOFT_SLOT)

    def ta(self, history: Sequence[int], next_item: int, candidates: Sequence[int]) -> str:
        return self.templates.ta.format(history=self._history(history), next=self.titles[int(next_item)],
                                        candidates=self._list(candidates), model=self.model_name, soft=SOFT_SLOT)

    def rps(self, history: Sequence[int], candidates: Sequence[int]) -> str:
        return self.templates.rps.format(history=self._history(history), candidates=self._list(candidates),
                                         model=self.model_name, soft=SOFT_SLOT)
