"""Callbacks that write run artifacts (the module itself never touches files), and the one that times training."""

from __future__ import annotations

import logging
import resource
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.utilities import move_data_to_device
import torch

from rdrec.eval.protocols import FullRanking
from rdrec.utils.atomic import atomic_file

log = logging.getLogger(__name__)


class SaveRanks(pl.Callback):
    """Writes the per-user rank of the target for every test protocol to ``<dirpath>/<prefix>.csv``.

    Also checks that every evaluated user was ranked exactly once (no DDP padding duplicates, no drops).
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        expected = trainer.datamodule.eval_users("test") if trainer.datamodule is not None else None
        for prefix, (users, ranks) in getattr(pl_module, "eval_ranks", {}).items():
            if not prefix.startswith("test"):
                continue
            users = users.cpu().numpy()
            if expected is not None and (len(users) != len(expected) or set(users) != set(expected.tolist())):
                raise RuntimeError(
                    f"{prefix}: ranked {len(users)} users ({len(set(users))} distinct), expected {len(expected)}"
                )
            if trainer.is_global_zero:
                self.dirpath.mkdir(parents=True, exist_ok=True)
                path = self.dirpath / f"{prefix.replace('/', '_')}.csv"
                with atomic_file(path, "w") as f:
                    pd.DataFrame({"user": users, "rank": ranks.cpu().numpy()}).to_csv(f, index=False)


class SaveGenerations(pl.Callback):
    """After testing, writes the module's test answers (``pl_module.generations``: one dict per answered prompt,
    e.g. the SLIM student's user, prompt, teacher text, student text and whether it parsed) to ``path`` as JSON
    lines, on rank 0 and atomically, so a reader sees which answers failed and why."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import json

        rows = getattr(pl_module, "generations", None)
        if not rows or not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path, "w") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


class SaveTopK(pl.Callback):
    """After testing, writes every evaluated user's top-k items to ``<dirpath>/<stage>.parquet``.

    ``all_users``: every user of the split, also when evaluation uses a subset (``data.eval_users``).
    Columns ``user``, ``items`` (at most k ids, best first; items a model cannot score, e.g. those no beam
    reached, are left out), ``scores``. Stage ``valid`` ranks from the training
    history, stage ``test`` from training + validation: DELRec and SLIM read these as the SR model's
    predictions. Seen items are left out like the full protocol does (``exclude_seen``).
    """

    def __init__(self, dirpath: str, k: int = 50, exclude_seen: bool = True, stages=("valid", "test"),
                 all_users: bool = True):
        self.dirpath, self.k, self.stages, self.all_users = Path(dirpath), k, tuple(stages), all_users
        self.protocol = FullRanking(exclude_seen=exclude_seen)

    @torch.no_grad()
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "score_all"):
            return
        was_training = pl_module.training
        pl_module.eval()
        dm = trainer.datamodule
        self.dirpath.mkdir(parents=True, exist_ok=True)
        for stage in self.stages:
            rows = []
            # every user (also when only a subset is evaluated, data.eval_users: DELRec and SLIM read everyone's),
            # unsharded: under DDP this one process writes the whole artifact
            for batch in dm.eval_dataloader(stage, all_users=self.all_users, shard=False):
                batch = move_data_to_device(batch, pl_module.device)  # nested (text-task) fields too
                scores, _, valid = self.protocol(pl_module, batch)
                scores = scores.masked_fill(~valid, float("-inf"))
                # the target is kept rankable by the protocol; for predictions it is just another item
                top = scores.topk(min(self.k, scores.shape[1] - 1), dim=1)
                items, values = top.indices.cpu().numpy(), top.values.float().cpu().numpy()
                keep = np.isfinite(values)  # beam search scores only the items its beams reached: rows may be shorter
                rows.append(pd.DataFrame({
                    "user": batch["user"].cpu().numpy(),
                    "items": [i[k] for i, k in zip(items, keep)],
                    "scores": [v[k] for v, k in zip(values, keep)],
                }))
            path = self.dirpath / f"{stage}.parquet"
            with atomic_file(path, "wb") as f:
                pd.concat(rows, ignore_index=True).to_parquet(f, index=False)
        pl_module.train(was_training)


class EvalJournal(pl.Callback):
    """Journals every validation and test pass of a ``RecModule`` under ``<dirpath>/<stage>`` (the ranks of each
    batch, ``rdrec.eval.journal.ScoreJournal``), so that a run killed while it evaluates scores, when started again,
    only the users it had not reached. A journal belongs to the weights it was computed with (a fingerprint), so
    the passes of a fit never mix. The run's journals are removed once testing has ended (a run with ``test=false``
    keeps its last validation's, a few KB: a resumed run that validates those weights again reads it)."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def _open(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from rdrec.eval.journal import ScoreJournal, weights_fingerprint
        from rdrec.modules.base import RecModule

        if not isinstance(pl_module, RecModule) or trainer.sanity_checking:
            return
        meta = {"stage": stage, "global_step": int(trainer.global_step), "weights": weights_fingerprint(pl_module),
                "protocols": {name: repr(p) for name, p in pl_module.protocols.items()}}
        pl_module.eval_journal = ScoreJournal(self.dirpath / stage, meta, rank=trainer.global_rank)
        trainer.strategy.barrier("eval_journal")  # rank 0 has cleared a stale journal before any rank writes
        if len(pl_module.eval_journal):
            log.info("%s: %d users already ranked by an interrupted pass over these weights (%s): not scored again",
                     stage, pl_module.eval_journal.num_users, self.dirpath / stage)

    def _close(self, pl_module: pl.LightningModule) -> None:
        journal = getattr(pl_module, "eval_journal", None)
        if journal is not None:
            journal.close()
            pl_module.eval_journal = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open(trainer, pl_module, "val")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open(trainer, pl_module, "test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(pl_module)
        trainer.strategy.barrier("eval_journal_end")
        if trainer.is_global_zero:
            shutil.rmtree(self.dirpath, ignore_errors=True)


class EpochTiming(pl.Callback):
    """Cost of training, logged at the end of every training epoch for benchmarks (conf/callbacks/default.yaml):

    - ``train/epoch_seconds``: wall-clock from the epoch's start to its last training batch (Lightning validates
      before ``on_train_epoch_end``, so the clock stops at the last batch, not after validation);
    - ``train/samples_per_s``: the epoch's training samples (rows of each batch) over those seconds;
    - ``train/seconds_per_step``: the median seconds of one training batch (forward, backward, optimizer step);
    - ``train/peak_gpu_mb``, ``train/peak_rss_mb``: peak GPU memory allocated (0 without CUDA) and peak resident
      memory of the process so far.
    """

    def __init__(self) -> None:
        self._epoch_start = self._last_batch_end = self._step_start = 0.0
        self._samples, self._steps = 0, []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._samples, self._steps = 0, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()
        self._steps.append(self._last_batch_end - self._step_start)
        self._samples += batch_rows(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = self._last_batch_end - self._epoch_start
        pl_module.log("train/epoch_seconds", seconds, sync_dist=False)
        pl_module.log("train/samples_per_s", self._samples / max(seconds, 1e-9), sync_dist=False)
        if self._steps:
            pl_module.log("train/seconds_per_step", sorted(self._steps)[len(self._steps) // 2], sync_dist=False)
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
        pl_module.log("train/peak_gpu_mb", float(peak), sync_dist=False)
        pl_module.log("train/peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, sync_dist=False)


def batch_rows(batch) -> int:
    """Rows of a batch: the length of its first tensor or list (every field of a batch holds one row per sample)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        return batch_rows(next(iter(batch.values()))) if batch else 0
    if isinstance(batch, (list, tuple)):
        return len(batch)
    return 1
