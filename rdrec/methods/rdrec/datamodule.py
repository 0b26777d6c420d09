"""DataModule of the RDRec/POD student: multi-task text batches for training, text-encoded evaluation batches.

Training examples come from ``train_view()`` and, for RDRec, from the teacher's rationale export
(:func:`rdrec.teacher.export.load_checked`), checked to belong to this exact split (dataset fingerprint) and to training
interactions only. Evaluation batches are the shared ones (history, target, seen items, candidate lists) plus
the sequential-task input the student reads. Items are written through the ``item_ids`` scheme
(rdrec.methods.rdrec.item_ids: built from the training view, cached by the split's fingerprint); its new tokens, if
any, are added to the tokenizer. The tokenizer is trained on the training text (or comes with pretrained weights)
on first use; the student builds its model from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from rdrec.data.batches import EvalExamples
from rdrec.data.datamodule import SeqRecDataModule
from rdrec.errors import DataError
from rdrec.data.prepared import TrainView
from rdrec.methods.rdrec.item_ids import DIGIT_SCHEMES, ItemIds, load_or_build
from rdrec.methods.rdrec.tasks import DEFAULT_TEMPLATES, TASKS, TaskMixture, TextEncoder, sequential_source
from rdrec.teacher.export import load_checked

log = logging.getLogger(__name__)


class TextEvalExamples(EvalExamples):
    """The shared evaluation batch plus the student's sequential-task input for each user."""

    def __init__(self, view, candidate_lists: dict, max_len: int, encoder: TextEncoder, max_history: int,
                 templates: dict[str, str], item_ids: ItemIds):
        super().__init__(view, candidate_lists, max_len)
        self.encoder, self.max_history, self.templates = encoder, max_history, templates
        self.item_ids = item_ids

    def collate(self, rows: list[int]) -> dict:
        batch = super().collate(rows)
        sources = [sequential_source(self.view.users[r], self.view.histories[r], self.max_history, self.templates,
                                     self.item_ids.text) for r in rows]
        batch.update(self.encoder.encode_sources(sources, ["sequential"] * len(rows)))
        # explanation generation for targets that have a review (text metrics; the review is the reference)
        reviews = self.view.references["review"].to_numpy()
        with_review = [r for r in rows if reviews[r] is not None]
        if with_review and "explanation" in self.templates:
            t = self.templates["explanation"]
            texts = [t.format(user=int(self.view.users[r]), item=self.item_ids.text(self.view.targets[r]))
                     for r in with_review]
            batch["explanation"] = {**self.encoder.encode_sources(texts, ["explanation"] * len(texts)),
                                    "references": [str(reviews[r]) for r in with_review]}
        return batch


class RDRecDataModule(SeqRecDataModule):
    def __init__(self, *args, tokenizer: Callable, ratios: dict[str, float], epoch_size: int = 20000,
                 rationales: str | None = None, max_history: int = 20, topn_candidates: int = 20,
                 max_source_length: int = 512, max_target_length: int = 64, templates: dict | None = None,
                 seed: int = 0, item_ids: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokenizer_factory = tokenizer
        self.ratios = {k: float(v) for k, v in dict(ratios).items() if v is not None}
        unknown = set(self.ratios) - set(TASKS)
        if unknown:
            raise ValueError(f"data.ratios: unknown task(s) {sorted(unknown)}; tasks are {list(TASKS)}")
        self.epoch_size, self.rationales_dir = int(epoch_size), rationales
        self.max_history, self.topn_candidates = max_history, topn_candidates
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.templates = {**DEFAULT_TEMPLATES, **dict(templates or {})}
        self.seed = int(seed)
        # {scheme: random|sequential|independent|collaborative|semantic, seed, data_dir, scheme parameters}
        self.item_ids_spec = dict(item_ids or {"scheme": "random"})
        self._tokenizer = self.encoder = self.rationales = None
        self.coverage: dict[str, float] = {}  # rationale coverage (rationale_coverage), into metrics.json
        self.item_ids: ItemIds | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        super().setup(stage)
        wants_rationales = any(self.ratios.get(t, 0) > 0 for t in ("preference", "attribute"))
        if wants_rationales:
            if not self.rationales_dir:
                raise ValueError("data.ratios give the rationale tasks weight but data.rationales is not set "
                                 "(the directory `rdrec-generate` exported)")
            self.rationales = load_rationales(self.rationales_dir, self.dataset.fingerprint, self.train_view)
            self.coverage = rationale_coverage(self.rationales, self.train_view)
            log.info("rationales: %d training interactions from %s; users covered %.1f%%, items %.1f%%",
                     len(self.rationales), self.rationales_dir, 100 * self.coverage["user_coverage"],
                     100 * self.coverage["item_coverage"])
        self.item_ids = load_or_build(self.train_view, self.dataset.fingerprint, self.cache_dir / self.dataset.name,
                                      **self.item_ids_spec)

    # ---- the tokenizer: trained on the training text unless the student brings its own (pretrained weights) --
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self.use_tokenizer(self.tokenizer_factory(corpus=self.corpus(), cache_dir=self.cache_dir / self.dataset.name))
        return self._tokenizer

    def use_tokenizer(self, tokenizer) -> None:
        """Use ``tokenizer`` (with the item-ID scheme's new tokens added to it) for every batch."""
        new = self.item_ids.new_tokens()
        if new:
            from tokenizers import AddedToken

            tokenizer.add_tokens([AddedToken(t, single_word=False, normalized=False) for t in new])
        self._tokenizer = tokenizer
        self.encoder = TextEncoder(tokenizer, self.max_source_length, self.max_target_length)
        for name in ("valid", "test"):
            old = self._eval[name]
            self._eval[name] = TextEvalExamples(old.view, old.candidate_lists, self.max_len, self.encoder,
                                                self.max_history, self.templates, self.item_ids)

    def corpus(self) -> list[str]:
        """Training text for the tokenizer: templates, every digit item ID (new-token schemes add theirs after
        training) and user id, reviews and rationales."""
        v: TrainView = self.train_view
        digits = self.item_ids.scheme in DIGIT_SCHEMES
        one = self.item_ids.text(1) if digits else "item_1"
        texts = [t.format(user=1, item=one, history=one, candidates=one) for t in self.templates.values()]
        texts += [self.item_ids.text(i) for i in range(1, v.num_items + 1)] if digits else []
        texts += [f"user_{u}" for u in range(1, v.num_users + 1)]
        texts += v.reviews["review"].astype(str).tolist()
        if self.rationales is not None:
            texts += self.rationales["user_preference"].tolist() + self.rationales["item_attribute"].tolist()
        return texts

    def item_tokens(self) -> dict[int, list[int]]:
        self.tokenizer  # noqa: B018 (built on first use)
        return self.encoder.item_tokens(self.num_items, self.item_ids.text)

    def train_dataset(self, epoch: int = 0) -> TaskMixture:
        return TaskMixture(self.train_view, self.ratios, self.epoch_size, seed=self.seed, epoch=epoch,
                           max_history=self.max_history, topn_candidates=self.topn_candidates,
                           rationales=self.rationales, templates=self.templates, item_text=self.item_ids.text)

    def train_dataloader(self) -> DataLoader:
        # a new mixture every epoch (strategy configs set trainer.reload_dataloaders_every_n_epochs: 1)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        data = self.train_dataset(epoch)
        self.tokenizer  # noqa: B018 (built on first use)
        log.info("epoch %d: %s", epoch, {t: n for t, n in data.counts.items() if n})
        return DataLoader(data, batch_size=self.batch_size, sampler=self.order.sampler_for(data, self.batch_size),
                          collate_fn=self.encoder,
                          num_workers=self.num_workers)

    def eval_dataloader(self, stage: str, all_users: bool = False, shard: bool = True) -> DataLoader:
        self.tokenizer  # noqa: B018 (built on first use: it replaces the eval examples with text ones)
        return super().eval_dataloader(stage, all_users, shard)


def load_rationales(path: str | Path, fingerprint: str, view: TrainView) -> pd.DataFrame:
    """The export's ``rdrec_interactions`` table (user, item, user_preference, item_attribute), after checking it
    was generated for this prepared dataset and holds training interactions only.

    When the export has user- or item-level sentences (tables ``rdrec_user_rationales``, ``rdrec_item_rationales``:
    ``rdrec-generate +coverage=full``), every training interaction without its own sentence gets its user's
    preference and its item's attributes from them (an interaction's own sentences come first)."""
    path = Path(path)
    tables, _ = load_checked(path, fingerprint)
    frame = tables["rdrec_interactions"].to_pandas()[["user", "item", "user_preference", "item_attribute"]]
    train_pairs = {(u, int(i)) for u, seq in enumerate(view.sequences) for i in seq}
    for row, (u, i) in enumerate(zip(frame["user"].tolist(), frame["item"].tolist())):
        if (int(u), int(i)) not in train_pairs:
            raise DataError("rationale for an interaction that is not in the training split", path=path / "tables",
                            line=row, field="user/item", expected="a training interaction", got=(u, i))
    by_user = dict(zip(tables["rdrec_user_rationales"]["user"], tables["rdrec_user_rationales"]["user_preference"]))
    by_item = dict(zip(tables["rdrec_item_rationales"]["item"], tables["rdrec_item_rationales"]["item_attribute"]))
    for n, key in enumerate(by_user):
        if not 1 <= int(key) <= view.num_users:
            raise DataError(path=path / "tables" / "rdrec_user_rationales", line=n, field="user",
                            expected=f"a user id in 1..{view.num_users}", got=key)
    for n, key in enumerate(by_item):
        if not 1 <= int(key) <= view.num_items:
            raise DataError(path=path / "tables" / "rdrec_item_rationales", line=n, field="item",
                            expected=f"an item id in 1..{view.num_items}", got=key)
    if by_user or by_item:
        own = {(int(u), int(i)) for u, i in zip(frame["user"], frame["item"])}
        extra = [{"user": u, "item": int(i), "user_preference": by_user.get(u, ""), "item_attribute": by_item.get(int(i), "")}
                 for u, seq in enumerate(view.sequences) for i in dict.fromkeys(seq.tolist())
                 if (u, int(i)) not in own and (u in by_user or int(i) in by_item)]
        frame = pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
    frame = frame.reset_index(drop=True)
    frame.attrs["item_level_items"] = sorted(int(i) for i, t in by_item.items() if str(t))  # rationale_coverage
    return frame


def rationale_coverage(frame: pd.DataFrame, view: TrainView) -> dict[str, float]:
    """How much of the data the rationale tasks cover: users with a preference sentence, items with an attribute
    sentence (over every user / item id of the dataset; an item-level sentence counts for an item with no training
    interaction too), and training interactions with both."""
    users = set(frame.loc[frame["user_preference"].astype(str).str.len() > 0, "user"].astype(int))
    items = set(frame.loc[frame["item_attribute"].astype(str).str.len() > 0, "item"].astype(int))
    items |= set(frame.attrs.get("item_level_items", []))
    both = frame[(frame["user_preference"].astype(str).str.len() > 0) & (frame["item_attribute"].astype(str).str.len() > 0)]
    pairs = {(int(u), int(i)) for u, i in zip(both["user"], both["item"])}
    train = {(u, int(i)) for u, seq in enumerate(view.sequences) for i in seq}
    return {"users_with_rationale": len(users), "user_coverage": len(users) / max(view.num_users, 1),
            "items_with_rationale": len(items), "item_coverage": len(items) / max(view.num_items, 1),
            "interaction_coverage": len(pairs & train) / max(len(train), 1)}
