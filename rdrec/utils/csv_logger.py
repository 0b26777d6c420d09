"""Lightning's CSV logger, continued rather than wiped by a resumed run (``conf/logger/csv.yaml``).

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts writing, so a run resumed after a
kill (``rdrec-train resume=<run dir>``, ``rdrec/cli/resume.py``) kept only what it logged itself: a stage 2 killed
while it evaluated lost its training row (``train/seconds_per_step``, ``train/loss``). Here the file is continued:

- every logged row goes to disk at once (``flush_logs_every_n_steps=1``; rdrec logs per epoch, so this is cheap),
  so a kill loses nothing that was logged;
- a resumed run keeps the rows logged before its checkpoint and drops those logged after it (their ``step`` is at
  least the checkpoint's ``global_step``), which it logs again as it redoes that work
  (``ResumeCheckpoints.on_load_checkpoint`` calls ``forget_from_step``).

Resumed from a checkpoint inside an epoch, that epoch's means of training metrics cover only the batches since the
checkpoint: Lightning does not checkpoint running means (``tests/test_faults_run.py`` compares everything else).
"""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from rdrec.utils.atomic import atomic_file


class _ContinuedWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # (Lightning deletes metrics.csv here)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])

    def forget_from_step(self, step: int) -> None:
        self.metrics = [m for m in self.metrics if m["step"] < step]
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if float(r["step"] or 0) < step]
        if len(kept) < len(rows):
            with atomic_file(self.metrics_file_path, "w") as f:  # (csv ends lines itself: \r\n, as Lightning)
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)


class CSVLogger(LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that writes each row at once and continues an existing
    ``metrics.csv`` (see the module docstring)."""

    def __init__(self, *args, flush_logs_every_n_steps: int = 1, **kwargs):
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuedWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def forget_from_step(self, step: int) -> None:
        """Drop the rows logged at ``step`` or later (a resumed run logs them again)."""
        self.experiment.forget_from_step(int(step))
