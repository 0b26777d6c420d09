"""Callbacks that write run artifacts (the module itself never touches files)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl


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
                tmp = path.with_suffix(".csv.tmp")
                pd.DataFrame({"user": users, "rank": ranks.cpu().numpy()}).to_csv(tmp, index=False)
                os.replace(tmp, path)
