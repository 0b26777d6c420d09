"""Hydra callbacks: the comparison table after a multirun, and a clear error when a launcher/sweeper plugin is
missing."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rdrec.aggregate import aggregate
from rdrec.errors import DataError

log = logging.getLogger(__name__)


class PrintTableOnMultirunEnd(Callback):
    """After a multirun: print the table of its runs and write it (``rdrec-aggregate``'s files) to
    ``<sweep dir>/aggregate``. A sweep config may set the baseline, the grouping and the plot's x axis."""

    def __init__(self, baseline: str | None = None, within: list[str] | None = None, x: str | None = None,
                 metrics: list[str] | None = None, write: bool = True):
        self.baseline, self.within, self.x, self.metrics, self.write = baseline, list(within or []), x, metrics, write

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        out = sweep_dir / "aggregate" if self.write else None
        try:
            table = aggregate([sweep_dir], out=out, metrics=self.metrics, baseline=self.baseline,
                              within=self.within, x=self.x)
        except FileNotFoundError:
            return  # every job failed; Hydra has reported why
        except DataError as err:  # a run's metrics.json is unreadable: say which, write nothing
            log.error("aggregate: %s", err)
            return
        except ValueError as err:  # e.g. the baseline did not run: still show the table without it
            log.warning("aggregate: %s; table without p-values", err)
            table = aggregate([sweep_dir], out=out, metrics=self.metrics, within=self.within, x=self.x)
        print(f"\n{sweep_dir}\n{table}" + (f"\n(also in {out})" if out else ""), flush=True)


class RequirePlugin(Callback):
    """Stops a multirun before its launcher/sweeper is built when the plugin providing it is not installed."""

    def __init__(self, module: str, package: str, what: str):
        self.module, self.package, self.what = module, package, what

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not _importable(self.module):
            raise SystemExit(
                f"rdrec: error: {self.what} needs the Hydra plugin '{self.package}', which is not installed.\n"
                f"  install it with: pip install {self.package}   (keep your torch pin, e.g. \"torch==2.13.0\")"
            )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
