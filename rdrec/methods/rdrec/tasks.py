"""Text-to-text tasks of the RDRec/POD student, built from the training view only.

Tasks (ids fixed by name in :data:`TASK_IDS`, so a row's task id always names the template its input came from,
and the POD and RDRec students have the same prompt table):

- ``sequential``  ``user_7 has interacted with item_3 item_9 … ; predict the next item`` → ``item_12``
- ``topn``        ``pick an item for user_7 from item_4 item_12 …`` (the target among sampled negatives) → ``item_12``
- ``explanation`` ``explain why user_7 interacted with item_12`` → the training review (datasets with reviews)
- ``preference``  ``what does user_7 prefer ?`` → a teacher rationale "The user prefers …" (RDRec)
- ``attribute``   ``what are the attributes of item_12 ?`` → a teacher rationale "The item's attributes are …" (RDRec)

:class:`TaskMixture` draws ``epoch_size`` examples per epoch, split between tasks by the configured ratios, from
seeded pools; :class:`TextEncoder` tokenizes them into a batch with whole-word indices, task ids aligned with
the rows, and targets padded with -100 (never counted by the loss).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from rdrec.data.prepared import TrainView

TASKS = ("sequential", "topn", "explanation", "preference", "attribute")
TASK_IDS = {name: i for i, name in enumerate(TASKS)}
ITEM_TASKS = ("sequential", "topn")  # targets are item ids

DEFAULT_TEMPLATES = {
    "sequential": "user_{user} has interacted with {history} ; predict the next item",
    "topn": "pick an item for user_{user} from {candidates}",
    "explanation": "explain why user_{user} interacted with {item}",
    "preference": "what does user_{user} prefer ?",
    "attribute": "what are the attributes of {item} ?",
}

# one word = an ID mention (user_12, item_345, or an item's code tokens <c0_3><c1_12><c2_0> written together), a
# run of word characters, or a run of punctuation
_WORD = re.compile(r"(?:<[a-z]\d+_\d+>)+|[A-Za-z]+_\d+|\w+|[^\w\s]+")


def item_text(item: int) -> str:
    """The plain digit ID (``item_345``); students write items through their ``item_ids`` scheme instead
    (rdrec.methods.rdrec.item_ids)."""
    return f"item_{int(item)}"


def item_list(items: Sequence[int], text: Callable[[int], str] = item_text) -> str:
    return " ".join(text(i) for i in items)


@dataclass(frozen=True)
class TextExample:
    task: str
    source: str
    target: str


# ---- whole-word indices ----------------------------------------------------------------------------------------
def whole_word_ids(text: str, offsets: Sequence[tuple[int, int]], special: Sequence[int]) -> list[int]:
    """Index 1, 2, … of the word each token belongs to (0 for special tokens), from the tokenizer's character
    offsets: all sub-tokens of ``item_345`` share one index. A token that is only a space marker belongs to the
    word that follows it."""
    owner = np.zeros(len(text) + 1, dtype=np.int64)
    for index, match in enumerate(_WORD.finditer(text), start=1):
        owner[match.start():match.end()] = index
    # next_word[c]: the word at the first non-space character at or after c
    next_word = owner.copy()
    for c in range(len(text) - 1, -1, -1):
        if owner[c] == 0:
            next_word[c] = next_word[c + 1]
    out = []
    for (start, end), is_special in zip(offsets, special):
        out.append(0 if is_special or end <= start else int(next_word[min(start, len(text))]))
    return out


class TextEncoder:
    """Tokenizes examples into student batches (keys: input_ids, attention_mask, whole_word_ids, task, labels)."""

    def __init__(self, tokenizer, max_source_length: int = 512, max_target_length: int = 64):
        self.tokenizer = tokenizer
        self.max_source_length, self.max_target_length = max_source_length, max_target_length

    def encode_sources(self, texts: list[str], tasks: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=True,
                             max_length=self.max_source_length)
        ids, masks, words = enc["input_ids"], enc["attention_mask"], []
        for text, offsets, special in zip(texts, enc["offset_mapping"], enc["special_tokens_mask"]):
            words.append(whole_word_ids(text, offsets, special))
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": _pad(ids, width, pad),
            "attention_mask": _pad(masks, width, 0),
            "whole_word_ids": _pad(words, width, 0),
            "task": torch.tensor([TASK_IDS[t] for t in tasks], dtype=torch.long),
        }

    def encode_targets(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_target_length)["input_ids"]
        return _pad(ids, max(len(r) for r in ids), -100)

    def __call__(self, examples: list[TextExample]) -> dict[str, torch.Tensor]:
        batch = self.encode_sources([e.source for e in examples], [e.task for e in examples])
        batch["labels"] = self.encode_targets([e.target for e in examples])
        return batch

    def item_tokens(self, num_items: int, text: Callable[[int], str] = item_text) -> dict[int, list[int]]:
        """Each item id's target tokens without end-of-sequence: what the decoder must spell."""
        texts = [text(i) for i in range(1, num_items + 1)]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return {i: row for i, row in enumerate(ids, start=1)}


def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


# ---- the task mixture -----------------------------------------------------------------------------------------
class TaskMixture(Dataset):
    """One epoch of examples: ``round(ratio_t / Σ ratio × epoch_size)`` for each task with a non-empty pool,
    drawn without replacement while the pool lasts, seeded by (seed, epoch).

    Pools (training data only): sequential and top-N use every (user, position ≥ 1) of the training sequences;
    explanation the training reviews; preference / attribute the teacher's rationales of training interactions
    (``rationales``: a frame with user, item, user_preference, item_attribute).
    """

    def __init__(self, view: TrainView, ratios: dict[str, float], epoch_size: int, seed: int = 0, epoch: int = 0,
                 max_history: int = 20, topn_candidates: int = 20, rationales: pd.DataFrame | None = None,
                 templates: dict[str, str] | None = None, item_text: Callable[[int], str] = item_text):
        unknown = set(ratios) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)} in the mixing ratios; tasks are {list(TASKS)}")
        self.view, self.max_history, self.topn_candidates = view, max_history, topn_candidates
        self.item_text = item_text
        self.templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        self.pools = self._pools(view, rationales)
        weights = {t: float(r) for t, r in ratios.items() if r and float(r) > 0 and len(self.pools[t])}
        if not weights:
            raise ValueError(f"no task has both a positive ratio and training data: ratios {dict(ratios)}, "
                             f"pool sizes { {t: len(p) for t, p in self.pools.items()} }")
        self.seed, self.epoch = int(seed), int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        total = sum(weights.values())
        self.plan: list[tuple[str, int]] = []
        for task in TASKS:  # fixed order: the plan does not depend on dict order
            if task not in weights:
                continue
            n, pool = int(round(weights[task] / total * epoch_size)), len(self.pools[task])
            picks = np.concatenate([rng.permutation(pool) for _ in range(-(-n // pool))])[:n] if n else []
            self.plan += [(task, int(p)) for p in picks]
        self.counts = {t: sum(1 for task, _ in self.plan if task == t) for t in TASKS}

    @staticmethod
    def _pools(view: TrainView, rationales: pd.DataFrame | None) -> dict[str, np.ndarray | pd.DataFrame]:
        positions = [(u, p) for u, seq in enumerate(view.sequences) for p in range(1, len(seq))]
        positions = np.array(positions, dtype=np.int64).reshape(-1, 2)
        empty = pd.DataFrame(columns=["user", "item", "user_preference", "item_attribute"])
        rat = empty if rationales is None else rationales.reset_index(drop=True)
        return {
            "sequential": positions, "topn": positions,
            "explanation": view.reviews.reset_index(drop=True),
            "preference": rat[rat["user_preference"].astype(str).str.len() > 0].reset_index(drop=True),
            "attribute": rat[rat["item_attribute"].astype(str).str.len() > 0].reset_index(drop=True),
        }

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> TextExample:
        task, row = self.plan[index]
        t = self.templates[task]
        if task in ITEM_TASKS:
            user, pos = self.pools[task][row]
            seq = self.view.sequences[user]
            target = int(seq[pos])
            if task == "sequential":
                source = t.format(user=user, history=item_list(seq[max(0, pos - self.max_history):pos],
                                                               self.item_text))
            else:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                source = t.format(user=user, candidates=item_list(self._candidates(rng, seq, target), self.item_text))
            return TextExample(task, source, self.item_text(target))
        rec = self.pools[task].iloc[row]
        source = t.format(user=int(rec["user"]), item=self.item_text(int(rec["item"])))
        field = {"explanation": "review", "preference": "user_preference", "attribute": "item_attribute"}[task]
        return TextExample(task, source, str(rec[field]))

    def _candidates(self, rng: np.random.Generator, seq: np.ndarray, target: int) -> np.ndarray:
        """The target among ``topn_candidates - 1`` uniform negatives the user has not trained on, shuffled."""
        n_items, want = self.view.num_items, self.topn_candidates - 1
        seen = set(seq.tolist())
        negatives: list[int] = []
        while len(negatives) < want and len(seen) < n_items:
            for i in rng.integers(1, n_items + 1, size=2 * want).tolist():
                if i not in seen:
                    seen.add(i)
                    negatives.append(i)
                    if len(negatives) == want:
                        break
        return rng.permutation(np.array([target, *negatives], dtype=np.int64))


def sequential_source(user: int, history: Sequence[int], max_history: int, templates: dict[str, str] | None = None,
                      item_text: Callable[[int], str] = item_text) -> str:
    """The sequential-task input for evaluation (same template as training)."""
    t = {**DEFAULT_TEMPLATES, **(templates or {})}["sequential"]
    history = list(history)[-max_history:] if max_history else []
    return t.format(user=int(user), history=item_list(history, item_text))
