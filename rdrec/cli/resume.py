"""Resume a killed ``rdrec-train`` run exactly, in its own run directory.

``rdrec-train resume=<run dir>`` (or ``ckpt_path=last``: the run named by ``hydra.run.dir``, else this task's most
recent unfinished run under ``<paths.log_dir>/<task_name>/runs``) continues the run in that directory:

- ``rewrite_argv`` turns the command line into the run's own overrides (``.hydra/overrides.yaml``, then any given
  now), ``hydra.run.dir=<run dir>``, ``hydra.output_subdir=null`` (the run's ``.hydra/`` stays as it was) and
  ``ckpt_path=<run dir>/checkpoints/last.ckpt``. Nothing to resume is an error, in one line.
- ``start`` (first thing in ``train``) refuses a resumed run whose composed config differs from the saved one
  (``ckpt_path`` aside), and claims the run directory (``rdrec.utils.rundir``).
- Lightning restores the weights, the optimiser, the loops and the callbacks' state (best-so-far checkpoint and
  score, early-stopping counters: they are found because the directory is the same); the data module restores the
  training order and every global random generator (``rdrec.data.order``); ``ResumeCheckpoints`` saves
  ``last.ckpt`` during an epoch as well, so a kill loses little, writes every checkpoint atomically, loads them as
  plain data (``rdrec.utils.checkpoints``) and restores an early stop that had already been decided.

A run killed with ``kill -9`` at any batch and resumed ends with the ``metrics.json`` of the uninterrupted run
(tests/test_faults_run.py) on one process; under DDP the order comes from Lightning's distributed sampler and a
mid-epoch resume is not exact.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_file
from rdrec.utils.checkpoints import load_checkpoint
from rdrec.utils.resolvers import ROOT_DIR
from rdrec.utils.rundir import claim

LAST = Path("checkpoints") / "last.ckpt"
IGNORED = ("ckpt_path",)  # keys a resumed run may change


def _fail(message: str) -> SystemExit:
    return SystemExit(f"rdrec: error: {message}")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if "=" in a and _key(a) == key]
    return found[-1].strip("'\"") if found else None


def _quoted(path: Path) -> str:
    return f"'{path}'" if "'" not in str(path) else str(path)


def unfinished(run_dir: Path) -> bool:
    return (run_dir / LAST).is_file() and not (run_dir / "metrics.json").exists()


def latest_unfinished(runs: Path) -> Path | None:
    """The run under ``runs`` whose ``last.ckpt`` was written last, among those without ``metrics.json``."""
    found = [d for d in runs.glob("*") if d.is_dir() and unfinished(d)] if runs.is_dir() else []
    return max(found, key=lambda d: (d / LAST).stat().st_mtime, default=None)


def rewrite_argv(argv: list[str] | None = None, task: str = "train") -> None:
    """Before Hydra runs: rewrite ``sys.argv`` (in place) for ``resume=<run dir>`` / ``ckpt_path=last`` and claim
    the run directory when the command line names it (``hydra.run.dir``), so that a run refused there leaves nothing
    behind (Hydra writes ``.hydra/`` before the task starts). Raises ``SystemExit`` with one line when there is
    nothing to resume or the directory belongs to another run."""
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    resume = _value(args, "resume")
    last = _value(args, "ckpt_path") == "last"
    multirun = any(a in ("-m", "--multirun") or a.startswith("hydra.mode=") for a in args)
    explicit = _value(args, "hydra.run.dir")
    if resume is None and not last:
        if explicit is not None and not multirun and _rank_zero() and not any(a.startswith("--") for a in args):
            try:
                claim(explicit)
            except DataError as err:
                raise _fail(str(err)) from None
        return
    if multirun:
        raise _fail("resume=/ckpt_path=last continue one run: not with a multirun (-m)")
    if resume is not None:
        run_dir = Path(resume)
        what = f"resume={resume}"
    elif explicit is not None:
        run_dir = Path(explicit)
        what = f"ckpt_path=last (hydra.run.dir={explicit})"
    else:
        log_dir = Path(_value(args, "paths.log_dir") or os.environ.get("RDREC_LOG_DIR") or ROOT_DIR / "logs")
        runs = log_dir / (_value(args, "task_name") or task) / "runs"
        found = latest_unfinished(runs)
        if found is None:
            raise _fail(f"ckpt_path=last: nothing to resume: no run under {runs} has {LAST} without metrics.json "
                        "(name one with resume=<run dir>)")
        run_dir, what = found, f"ckpt_path=last ({found})"
    run_dir = run_dir.resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise _fail(f"{what}: {run_dir} is not an rdrec-train run directory (no .hydra/overrides.yaml)")
    if (run_dir / "metrics.json").exists():
        raise _fail(f"{what}: the run in {run_dir} has finished (it has metrics.json); nothing to resume")
    if not (run_dir / LAST).is_file():
        raise _fail(f"{what}: nothing to resume: {run_dir / LAST} does not exist (a run killed before its first "
                    "checkpoint: delete its directory and start it again)")
    previous = [str(o) for o in OmegaConf.load(saved)]
    given = [a for a in args if _key(a) not in ("resume", "ckpt_path", "hydra.run.dir", "hydra.output_subdir")]
    keys = {_key(a) for a in given}
    argv[1:] = [*(o for o in previous if _key(o) not in keys), *given, f"hydra.run.dir={_quoted(run_dir)}",
                "hydra.output_subdir=null", f"ckpt_path={_quoted(run_dir / LAST)}"]
    if _rank_zero():
        try:
            claim(run_dir, resume=True)
        except DataError as err:
            raise _fail(str(err)) from None
    print(f"rdrec: resuming {run_dir} from {LAST}", file=sys.stderr, flush=True)


def _rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def resuming(cfg: DictConfig) -> bool:
    """True when ``cfg.ckpt_path`` is a checkpoint of this very run directory (a resumed run)."""
    if not cfg.get("ckpt_path") or not cfg.get("train", True):
        return False
    output = Path(cfg.paths.output_dir).resolve()
    return Path(str(cfg.ckpt_path)).resolve().parent == output / "checkpoints"


def start(cfg: DictConfig) -> None:
    """Claim the run directory; for a resumed run first check that it is the same run (same config)."""
    if not _rank_zero():
        return  # DDP workers: rank 0 owns the directory
    output = Path(cfg.paths.output_dir)
    resumed = resuming(cfg)
    if resumed:
        check_same_config(cfg, output / ".hydra" / "config.yaml")
        for stale in (output / "checkpoints").glob(".*.tmp"):  # a write the kill interrupted
            stale.unlink(missing_ok=True)
    claim(output, resume=resumed)


def check_same_config(cfg: DictConfig, saved_path: Path) -> None:
    if not saved_path.is_file():
        raise DataError("a resumed run needs the run's saved config", path=saved_path, got="no such file")
    saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
    now = OmegaConf.to_container(cfg, resolve=False)
    for key in IGNORED:
        saved.pop(key, None)
        now.pop(key, None)
    diff = _first_difference(saved, now)
    if diff is not None:
        key, before, after = diff
        raise DataError("a resumed run must keep the run's config (start a new run to change it)", path=saved_path,
                        field=key, expected=repr(before), got=after)


def _first_difference(a, b, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{prefix}{k}", a.get(k, "(absent)"), b.get(k, "(absent)")
            found = _first_difference(a[k], b[k], f"{prefix}{k}.")
            if found:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, synced, then renamed over it (a kill during a
    save leaves the previous file whole), and read as plain data only (``rdrec.utils.checkpoints``)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb", encoding=None) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        return load_checkpoint(path, map_location=map_location)


def install(trainer: pl.Trainer) -> None:
    """Atomic, plain-data checkpoints for this trainer (unless a strategy brings its own checkpoint I/O)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    # rdrec's data modules resume the epoch's order themselves (rdrec.data.order), not through the loader
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


class ResumeCheckpoints(pl.Callback):
    """Writes ``<dirpath>/last.ckpt`` during an epoch too: every ``every_n_train_steps`` optimiser steps and/or
    ``every_n_minutes`` (the epoch's end is left to ModelCheckpoint, which saves ``last.ckpt`` after validating).
    On resume, re-applies an early stop the restored EarlyStopping state had already decided, and has the loggers
    that can (``rdrec.utils.csv_logger``) forget the rows logged after the checkpoint."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None, every_n_minutes: float | None = None):
        if every_n_train_steps is not None and int(every_n_train_steps) < 1:
            raise ValueError(f"every_n_train_steps: expected a positive number or null, got {every_n_train_steps!r}")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = None if every_n_train_steps is None else int(every_n_train_steps)
        self.every_s = None if every_n_minutes is None else float(every_n_minutes) * 60
        self._last_save = time.monotonic()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        for cb in trainer.early_stopping_callbacks:
            if cb.wait_count >= cb.patience:  # the uninterrupted run stopped here
                trainer.should_stop = True

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        # resuming: what the loggers wrote after this checkpoint is logged again as the run redoes it
        # (rdrec.utils.csv_logger; loggers without forget_from_step keep their own behaviour)
        for logger in trainer.loggers:
            if hasattr(logger, "forget_from_step"):
                logger.forget_from_step(int(checkpoint.get("global_step", 0)))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.sanity_checking or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # (mid-accumulation gradients are not in a checkpoint)
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch's last batch: validation and ModelCheckpoint follow
        due = bool(self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0)
        if self.every_s is not None:  # every process must agree (saving is collective under DDP)
            due = trainer.strategy.broadcast(due or time.monotonic() - self._last_save >= self.every_s)
        if due:
            path = self.dirpath / LAST.name
            for cb in trainer.checkpoint_callbacks:  # ModelCheckpoint then overwrites it instead of writing last-v1
                if cb.save_last and cb.dirpath and Path(cb.dirpath).resolve() == self.dirpath.resolve():
                    cb.last_model_path = str(Path(cb.dirpath) / LAST.name)
            trainer.save_checkpoint(path)
            self._last_save = time.monotonic()
