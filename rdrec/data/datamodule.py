"""LightningDataModule for sequential recommendation: cached preparation, leak-free views, persisted candidates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Subset

from rdrec.data.batches import EvalExamples, TrainSequences
from rdrec.data.candidates import load_or_create
from rdrec.data.order import ResumableOrder
from rdrec.data.pipeline import prepare_dataset
from rdrec.data.sources.base import Source
from rdrec.data.split import SplitConfig

log = logging.getLogger(__name__)


class SeqRecDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source: Source,
        split: SplitConfig,
        cache_dir: str,
        candidate_lists: dict | None = None,
        max_len: int = 50,
        train_stride: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        eval_users: int | None = None,
    ):
        super().__init__()
        self.source, self.split, self.cache_dir = source, split, Path(cache_dir)
        # {name: {kind: sampled|shown, size: int, strategy: uniform|popularity}}
        self.candidate_specs = {k: dict(v) for k, v in (candidate_lists or {}).items() if v is not None}
        self.max_len, self.train_stride = max_len, train_stride
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        if eval_users is not None and int(eval_users) < 1:
            raise ValueError(f"data.eval_users: expected a positive number of users or null (all), got {eval_users!r}")
        self.eval_user_limit = None if eval_users is None else int(eval_users)
        self.dataset = None
        self._eval: dict[str, EvalExamples] = {}
        self._subsets: dict[str, np.ndarray] = {}  # stage -> sorted row indices of the evaluated users
        self.order = ResumableOrder()  # the training order and random states a checkpoint carries (exact resume)

    # Lightning calls prepare_data on one process per node and setup on every process; both are idempotent
    # and the entry point calls them once up front to learn num_items before the module is built.
    def prepare_data(self) -> None:
        prepared = prepare_dataset(self.source, self.split, self.cache_dir, log=log.info)
        for stage in ("valid", "test"):
            self._candidate_lists(prepared, stage)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = prepare_dataset(self.source, self.split, self.cache_dir, log=log.info)
        self.train_view = self.dataset.train_view()
        for name in ("valid", "test"):
            view = self.dataset.eval_view(name)
            self._eval[name] = EvalExamples(view, self._candidate_lists(self.dataset, name), self.max_len)
            if self.eval_user_limit is not None and self.eval_user_limit < len(view.users):
                # drawn from the split seed alone, so every method evaluated on this split sees the same users
                order = np.random.default_rng(self.split.seed).permutation(len(view.users))
                self._subsets[name] = np.sort(order[: self.eval_user_limit])

    def _candidate_lists(self, prepared, stage: str) -> dict:
        return {
            name: load_or_create(
                self.cache_dir, spec["kind"], prepared, stage, spec["size"], spec.get("strategy", "uniform"),
                self.split.seed,
            )
            for name, spec in self.candidate_specs.items()
        }

    # ---- what modules may ask of the data (no file formats) ---------------------------------------------
    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def num_users(self) -> int:
        return self.dataset.num_users

    def train_item_counts(self):
        return self.train_view.item_counts

    def eval_users(self, stage: str):
        """The users evaluated at ``stage``: all of them, or the seeded ``eval_users`` subset."""
        users = self._eval[stage].view.users
        return users[self._subsets[stage]] if stage in self._subsets else users

    # ---- loaders -----------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        data = TrainSequences(self.train_view.sequences, self.max_len, self.train_stride)
        return DataLoader(data, batch_size=self.batch_size, sampler=self.order.sampler_for(data, self.batch_size),
                          collate_fn=data.collate, num_workers=self.num_workers)

    # Lightning saves these in every checkpoint and restores them on resume (rdrec.data.order)
    def state_dict(self) -> dict:
        return {"train_order": self.order.state_dict(self.trainer)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.order.load_state_dict(state_dict.get("train_order"))

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, stage: str, all_users: bool = False, shard: bool = True) -> DataLoader:
        """The evaluation batches of ``stage``: the ``eval_users`` subset, or every user with ``all_users``
        (predictions other methods read, e.g. the SR model's top-k for DELRec, cover everyone). Under DDP each
        process gets its share of the users unless ``shard`` is false (one process writing an artifact)."""
        data = self._eval[stage]
        collate = data.collate
        if stage in self._subsets and not all_users:
            data = Subset(data, self._subsets[stage].tolist())
        # Lightning's default distributed sampler pads with repeated users; evaluation must see each user once.
        distributed = shard and dist.is_available() and dist.is_initialized()
        sampler = UnrepeatedDistributedSampler(data, shuffle=False) if distributed else None
        return DataLoader(
            data, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=collate, num_workers=self.num_workers
        )
