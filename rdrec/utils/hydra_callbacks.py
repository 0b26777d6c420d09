"""Hydra callbacks: after a multirun, print the comparison table of its runs."""

from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rdrec.aggregate import load_runs, summary_table


class PrintTableOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        try:
            runs = load_runs([config.hydra.sweep.dir])
        except FileNotFoundError:
            return  # every job failed; Hydra has reported why
        print(f"\n{config.hydra.sweep.dir}\n" + summary_table(runs))
