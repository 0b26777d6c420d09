"""rdrec-train: fit a strategy, evaluate its best checkpoint on val and test, write metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

import rdrec.wandb_logging  # noqa: F401 - registers the resolvers conf/logger/wandb.yaml uses
from rdrec.utils.instantiate import instantiate_declared, instantiate_list
from rdrec.utils.report import metrics_table, write_metrics
from rdrec.cli import resume
from rdrec.cli.checks import check_config, check_data_sizes
from rdrec.cli.errors import report_data_errors
from rdrec.utils.checkpoints import best_model_path, load_checkpoint
from rdrec.utils.resolvers import CONFIG_DIR

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)  # an unknown key or a value that cannot work stops the run before any work
    resume.start(cfg)  # claims the run directory; a resumed run must keep its config (rdrec/cli/resume.py)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()  # the module's size depends on the data
    check_data_sizes(cfg, datamodule)
    module = instantiate_declared(  # hands the strategy only those of these arguments its constructor declares
        cfg.strategy,
        num_items=datamodule.num_items,
        num_users=datamodule.num_users,
        protocols=instantiate(cfg.eval.protocols),
        ks=list(cfg.eval.ks),
        mrr_k=cfg.eval.mrr_k,
    )
    loggers = instantiate_list(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=instantiate_list(cfg.get("callbacks")), logger=loggers or False)
    resume.install(trainer)  # atomic checkpoint writes, plain-data checkpoint loads
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if cfg.test:
        best = best_model_path(trainer) if cfg.train else ""
        ckpt = best or (None if cfg.train else cfg.ckpt_path)
        if cfg.train and _best_is_what_fit_last_validated(trainer, module):
            log.info("the best checkpoint holds the final weights, validated at the end of fit: not validating again")
        else:
            trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        metrics = dict(module.eval_results)  # float64; the loggers' copies are float32
    if trainer.is_global_zero:
        write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        print(f"\n{cfg.data.source._target_.rsplit('.', 1)[-1]} · {cfg.strategy._target_.rsplit('.', 1)[-1]}")
        print(metrics_table(metrics))
        log.info("run directory: %s", cfg.paths.output_dir)
    for logger in loggers:
        logger.finalize("success")  # flush what validate/test logged after fit's own finalize
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        wandb.finish()  # one wandb run per job, also when a multirun executes many jobs in one process
    return metrics


def _best_is_what_fit_last_validated(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """True when the best checkpoint was saved at fit's final step, right after the last validation: its
    validation metrics are already in ``module.eval_results``, and a second pass (costly for beam search and LLM
    scoring) would only repeat them."""
    best = best_model_path(trainer)
    step = getattr(module, "validated_at_step", None)
    if not best or not Path(best).is_file() or step is None or step != trainer.global_step:
        return False  # (a sharded checkpoint is a directory: validate as usual)
    saved = load_checkpoint(best, mmap=True)  # mmap: tensors stay on disk
    return saved.get("global_step") == step


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@report_data_errors
def _main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.eval.monitor)  # the value an Optuna sweeper optimises


def main() -> float | None:
    resume.rewrite_argv()  # resume=<run dir> / ckpt_path=last: continue in that run directory
    return _main()


if __name__ == "__main__":
    main()
