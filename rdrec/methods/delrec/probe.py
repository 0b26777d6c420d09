"""A planted rule DELRec must learn: synthetic franchises, and examples whose answer follows from the prompt alone.

Items belong to franchises (title "<franchise> <number>"). A history shows items of distinct franchises; the user's
next item belongs to the franchise of the *last* history item, and the other candidates are decoys from the history's
other franchises (so "a franchise I saw" does not tell the answer; only "the last one's" does), then from unseen ones.
``tail`` > 1 makes the rule easier (the last ``tail`` items share the answer's franchise), for tiny random models. Stage 2 must learn
this rule (HR@1 far above 1/K on held-out examples).

A planted "SR model" for stage 1: it ranks first the candidate of one fixed franchise (its favourite, present in every
RPS list), whatever the history. The soft prompt must learn to imitate it (RPS accuracy far above 1/K) while the LLM
stays frozen. Used by ``tests/test_delrec_probe.py`` (a tiny random Llama) and ``experiments/delrec/probe_sweep.py``
(SmolLM2, the learning-rate sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from rdrec.methods.delrec.prompts import DelRecPrompts, PromptTemplates

NAMES = ("Alpha", "Bravo", "Comet", "Delta", "Ember", "Falcon", "Glacier", "Harbor", "Iris", "Jungle", "Kestrel",
         "Lumen", "Meteor", "Nova", "Orbit", "Prism", "Quartz", "Raven", "Summit", "Tundra", "Umber", "Vortex",
         "Willow", "Xenon")


@dataclass
class PlantedRule:
    names: tuple[str, ...] = NAMES
    per_franchise: int = 8
    history: int = 4
    k: int = 4
    favourite: int = 0  # the planted SR model's franchise
    tail: int = 1  # the last ``tail`` history items share the answer's franchise (1: only the last one does)
    templates: PromptTemplates | dict | None = None
    titles: list[str] = field(init=False)

    def __post_init__(self):
        if self.k - 1 > len(self.names) - 1 or self.history > len(self.names) - 1:
            raise ValueError("not enough franchises for this history length / K")
        self.titles = [""] + [f"{n} {j + 1}" for n in self.names for j in range(self.per_franchise)]
        self.prompts = DelRecPrompts(self.titles, "SASRec", self.templates, max_history=self.history)

    @property
    def num_items(self) -> int:
        return len(self.titles) - 1

    def franchise(self, item: int) -> int:
        return (int(item) - 1) // self.per_franchise

    def _item(self, rng, franchise: int, banned: set) -> int:
        choices = [franchise * self.per_franchise + j + 1 for j in range(self.per_franchise)]
        choices = [c for c in choices if c not in banned]
        return int(rng.choice(choices))

    def _list(self, rng, answer: int, decoy_franchises: list[int], banned: set) -> list[int]:
        items = [answer] + [self._item(rng, f, banned | {answer}) for f in decoy_franchises]
        return [items[i] for i in rng.permutation(len(items))]

    def _history(self, rng, exclude: set = frozenset(), tail: int = 1) -> list[int]:
        pool = [f for f in range(len(self.names)) if f not in exclude]
        franchises = [int(f) for f in rng.choice(pool, size=self.history - tail + 1, replace=False)]
        franchises += franchises[-1:] * (tail - 1)
        out: list[int] = []
        for f in franchises:
            out.append(self._item(rng, f, set(out)))
        return out

    def rec_examples(self, n: int, seed: int) -> list[dict]:
        """Stage-2 examples: {"prompt", "target", "history", "candidates"}."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            history = self._history(rng, tail=self.tail)
            franchises = [self.franchise(i) for i in history]
            answer = self._item(rng, franchises[-1], set(history))
            others = list(dict.fromkeys(f for f in franchises if f != franchises[-1]))  # the history's other ones
            unseen = [f for f in range(len(self.names)) if f not in franchises]
            decoys = (others + [int(f) for f in rng.permutation(unseen)])[: self.k - 1]
            cands = self._list(rng, answer, decoys, set(history))
            out.append({"prompt": self.prompts.rec(history, cands), "target": answer, "history": history,
                        "candidates": cands})
        return out

    def rps_examples(self, n: int, seed: int) -> list[dict]:
        """Stage-1 RPS examples: the planted SR model's first recommendation is the favourite franchise's item."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            history = self._history(rng, exclude={self.favourite})
            answer = self._item(rng, self.favourite, set(history))
            others = [f for f in range(len(self.names)) if f != self.favourite]
            decoys = [int(f) for f in rng.choice(others, size=self.k - 1, replace=False)]
            cands = self._list(rng, answer, decoys, set(history))
            out.append({"rps_prompt": self.prompts.rps(history, cands), "rps_target": answer, "history": history,
                        "candidates": cands})
        return out


@torch.no_grad()
def hit_rate_at_1(module, examples: list[dict], task: str = "rec", batch_size: int = 8) -> float:
    """Share of ``examples`` whose answer the module scores highest among its candidates (ties count as misses)."""
    module.eval()
    hits = 0
    for start in range(0, len(examples), batch_size):
        rows = examples[start : start + batch_size]
        cands = torch.tensor([r["candidates"] for r in rows])
        if task == "rec":
            scores = module.score_candidates({"history": torch.tensor([r["history"] for r in rows])}, cands)
        else:
            scores = module.score_prompts([r["rps_prompt"] for r in rows], cands)
        target = torch.tensor([r["target" if task == "rec" else "rps_target"] for r in rows])
        best = scores.max(1).values
        pos = scores[cands == target[:, None]]
        hits += int(((pos >= best) & ((scores == best[:, None]).sum(1) == 1)).sum())
    return hits / len(examples)
