"""The teacher as a LightningModule, so ``Trainer.predict`` shards generation across devices and nodes.

Each predict "sample" is one fixed unit of prompts (``rdrec.teacher.generator.plan``: a few batches); under DDP Lightning
gives every rank a disjoint share of these batches (its ``UnrepeatedDistributedSamplerWrapper`` for predict:
no padding, so no batch is generated twice). ``predict_step`` generates, parses and retries its unit and
returns the records; a ``BasePredictionWriter`` (``rdrec.teacher.callbacks.StoreWriter``) commits them. The
module knows nothing of files; the local model (transformers backend) is a submodule, so Lightning moves it to
the rank's device.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from rdrec.teacher.generator import Job, RationaleGenerator


class TeacherModule(pl.LightningModule):
    def __init__(self, generator: RationaleGenerator):
        super().__init__()
        self.generator = generator
        module = generator.backend.torch_module()
        self.lm = module if isinstance(module, torch.nn.Module) else None

    def on_predict_start(self) -> None:
        self.generator.backend.setup(self.device if self.lm is not None else None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # prompts (text), not tensors: the backend moves its own tensors

    def predict_step(self, batch: list[Job], batch_idx: int = 0) -> dict:
        records, stats = self.generator.run_batch(batch, rank=self.global_rank)
        return {"records": records, "stats": stats, "keys": [j.key for j in batch]}


def first(batch: list):
    """collate_fn for a DataLoader with batch_size=1 whose samples are already batches."""
    return batch[0]
