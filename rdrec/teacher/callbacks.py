"""Lightning callbacks of ``rdrec-generate``: commit each batch to the store, show progress with tokens/s."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

from rdrec.teacher.store import RationaleStore


class StoreWriter(BasePredictionWriter):
    """Commits the records of every predict batch as one store segment (all or nothing), on its own rank."""

    def __init__(self, store_dir: str):
        super().__init__(write_interval="batch")
        self.store_dir = store_dir
        self.store: RationaleStore | None = None
        self.totals = {"ok": 0, "failed": 0, "transport_errors": 0, "completion_tokens": 0, "prompt_tokens": 0,
                       "generations": 0, "seconds": 0.0, "batches": 0}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.store = RationaleStore(self.store_dir, rank=trainer.global_rank)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.store.append(prediction["records"])
        for k, v in prediction["stats"].items():
            self.totals[k] += v
        self.totals["batches"] += 1
        if trainer.received_sigterm:  # Lightning's predict loop does not stop on SIGTERM: stop once this batch is stored
            raise SystemExit(stopped_message(self.store_dir, batch_idx))


def stopped_message(store_dir: str, batch_idx: int | None = None) -> str:
    """The one line a run stopped by SIGTERM ends with (on every rank, also one whose peer left a collective)."""
    after = f" after storing batch {batch_idx}" if batch_idx is not None else " after its last stored batch"
    return (f"rdrec-generate: SIGTERM received; stopped{after}. "
            f"Rerun the same command to resume from the store ({store_dir}).")


class GenerationProgress(pl.Callback):
    """A tqdm bar over this rank's prompts with answers/s and generated tokens/s (rank 0 only prints)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None
        self.tokens = self.failed = 0
        self.start = 0.0

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            share = -(-self.total // max(trainer.world_size, 1))
            desc = "teacher" + (f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else "")
            self.bar = tqdm(total=share, desc=desc, unit="prompt", dynamic_ncols=True)
        self.start = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.tokens += outputs["stats"]["completion_tokens"]
        self.failed += outputs["stats"]["failed"]
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(len(outputs["keys"]))
            self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.1f}", failed=self.failed, refresh=False)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
