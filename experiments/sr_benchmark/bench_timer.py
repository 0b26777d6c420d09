"""A Lightning callback that times rdrec's training epochs and evaluation passes from outside the module.

Added to a run with ``PYTHONPATH=experiments/sr_benchmark rdrec-train ... +callbacks.bench_timer._target_=bench_timer.BenchTimer``.
It writes ``<run dir>/bench_timing.json``:

* ``train_epochs``: seconds from ``on_train_epoch_start`` to the end of the epoch's last training batch, i.e.
  forward/backward/optimizer only (validation, which Lightning runs before ``on_train_epoch_end``, is excluded;
  this is what RecBole's ``epoch N training [time: …]`` measures);
* ``val_passes`` / ``test_passes``: seconds from ``on_validation_start`` / ``on_test_start`` to
  ``on_validation_end`` / ``on_test_end`` (scoring all items for every user and computing the metrics; the
  checkpoint callbacks run after this callback). ``stage`` says whether a validation pass ran during fit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl


def _fn(trainer) -> str:
    fn = trainer.state.fn
    return getattr(fn, "value", str(fn))  # "fit", "validate", "test"


class BenchTimer(pl.Callback):
    def __init__(self, filename: str = "bench_timing.json") -> None:
        self.filename = filename
        self.train_epochs: list[dict] = []
        self.val_passes: list[dict] = []
        self.test_passes: list[dict] = []
        self._t_epoch = self._t_last_batch = self._t_eval = (0.0, 0.0)  # (wall, cpu)

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def _epoch_done(self, trainer) -> None:
        self.train_epochs.append({"epoch": trainer.current_epoch, "seconds": self._t_last_batch[0] - self._t_epoch[0],
                                  "cpu_seconds": self._t_last_batch[1] - self._t_epoch[1]})
        self._t_epoch = self._t_last_batch  # recorded

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t_epoch = self._t_last_batch = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._t_last_batch = self._now()

    def on_validation_start(self, trainer, pl_module) -> None:
        if _fn(trainer) == "fit" and self._t_last_batch[0] > self._t_epoch[0]:  # epoch-end validation
            self._epoch_done(trainer)
        self._t_eval = self._now()

    def on_validation_end(self, trainer, pl_module) -> None:
        wall, cpu = self._now()
        self.val_passes.append({"stage": _fn(trainer), "epoch": trainer.current_epoch,
                                "seconds": wall - self._t_eval[0], "cpu_seconds": cpu - self._t_eval[1]})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._t_last_batch[0] > self._t_epoch[0]:  # an epoch without validation
            self._epoch_done(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        self._t_eval = self._now()

    def on_test_end(self, trainer, pl_module) -> None:
        wall, cpu = self._now()
        self.test_passes.append({"seconds": wall - self._t_eval[0], "cpu_seconds": cpu - self._t_eval[1]})
        self._write(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        if not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / self.filename
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"train_epochs": self.train_epochs, "val_passes": self.val_passes,
                                   "test_passes": self.test_passes, "pid": os.getpid()}, indent=1))
        tmp.replace(out)
