"""Weights & Biases: run grouping and tags from the Hydra run, per-epoch curves, final metrics, and a table of
sample predictions (with rationales when the strategy writes them).

``conf/logger/wandb.yaml`` uses the resolvers below (registered on import; ``rdrec-train`` imports this module):

- ``${wandb_group:${paths.output_dir},${task_name}}``: ``<task>/<sweep dir name>`` for a job of a multirun (all
  jobs of one sweep share it, whichever launcher ran them), ``null`` for a single run;
- ``${wandb_tags:${tags}}``: the config's tags plus ``strategy:<name>`` and ``data:<name>`` (the Hydra choices;
  the ``_target_`` class names when composed without Hydra's runtime, e.g. in tests).

A strategy that generates text (rationales, explanations) shows it in the samples table by defining
``sample_rationales(users: list[int]) -> dict[int, str]`` on its LightningModule.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.loggers import WandbLogger

from rdrec.eval.protocols import CandidateRanking

log = logging.getLogger(__name__)
TAGGED_GROUPS = ("strategy", "data")


def wandb_group(output_dir: str, task_name: str) -> str | None:
    run = Path(str(output_dir))
    sweep = run.parent
    if (sweep / "multirun.yaml").exists() or sweep.parent.name == "multiruns":
        return f"{task_name}/{sweep.name}"
    return None


def wandb_tags(tags, _root_) -> list[str]:
    out = [str(t) for t in (tags or [])]
    choices = _hydra_choices()
    for group in TAGGED_GROUPS:
        name = choices.get(group) or _target_name(_root_, group)
        if name and f"{group}:{name}" not in out:
            out.append(f"{group}:{name}")
    return out


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def _target_name(root, group: str) -> str | None:
    node = OmegaConf.select(root, f"{group}.source._target_" if group == "data" else f"{group}._target_", default=None)
    return str(node).rsplit(".", 1)[-1].lower() if node else None


OmegaConf.register_new_resolver("wandb_group", wandb_group, replace=True)
OmegaConf.register_new_resolver("wandb_tags", wandb_tags, replace=True)


class WandbSamples(pl.Callback):
    """With a wandb logger attached: validation metrics plotted per epoch, the final (float64) metrics in the
    run summary, and after testing a table ``test/samples`` of the first ``num_users`` test users: history,
    target, its rank, the top-``k`` predictions (titles) and, if the strategy provides them, rationales."""

    def __init__(self, num_users: int = 20, k: int = 10, history: int = 5):
        self.num_users, self.k, self.history = num_users, k, history

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in _wandb(trainer):
            logger.experiment.define_metric("epoch")
            logger.experiment.define_metric("val/*", step_metric="epoch")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = _wandb(trainer)
        if not loggers or not trainer.is_global_zero:
            return
        results = dict(getattr(pl_module, "eval_results", {}) or {})
        try:
            columns, rows = self.sample_rows(trainer, pl_module)
        except Exception as err:  # noqa: BLE001 - a table must never fail a finished run
            log.warning("wandb samples table skipped: %s", err)
            columns, rows = None, None
        for logger in loggers:
            logger.experiment.summary.update(results)
            if rows:
                logger.log_table(key="test/samples", columns=columns, data=rows)

    @torch.no_grad()
    def sample_rows(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[list[str], list[list]]:
        dm = trainer.datamodule
        titles = _titles(dm)
        name, protocol = next(iter(pl_module.protocols.items()))
        prefix = protocol.metric_prefix("test")
        ranked = getattr(pl_module, "eval_ranks", {}).get(prefix)
        rank_of = dict(zip(ranked[0].tolist(), ranked[1].tolist())) if ranked else {}
        was_training = pl_module.training
        pl_module.eval()
        rows: list[list] = []
        for batch in dm.test_dataloader():
            n = self.num_users - len(rows)
            batch = {key: value[:n].to(pl_module.device) if torch.is_tensor(value) else value[:n]
                     for key, value in batch.items()}
            scores, _, valid = protocol(pl_module, batch)
            top = scores.masked_fill(~valid, float("-inf")).topk(min(self.k, scores.shape[1]), dim=1).indices
            if isinstance(protocol, CandidateRanking):  # columns are positions in the candidate list
                top = batch[f"{protocol.name}_candidates"].gather(1, top)
            for i, user in enumerate(batch["user"].tolist()):
                history = [h for h in batch["history"][i].tolist() if h][-self.history:]
                target = int(batch["target"][i])
                rows.append([user, " · ".join(titles(h) for h in history), titles(target), rank_of.get(user),
                             target in top[i].tolist(), " · ".join(titles(t) for t in top[i].tolist())])
            if len(rows) >= self.num_users:
                break
        pl_module.train(was_training)
        columns = ["user", f"history (last {self.history})", "target", f"rank ({name})", f"hit@{self.k}",
                   f"top-{self.k} ({name})"]
        rationales = getattr(pl_module, "sample_rationales", None)
        if callable(rationales):
            texts = rationales([r[0] for r in rows]) or {}
            columns.append("rationale")
            for r in rows:
                r.append(texts.get(r[0], ""))
        return columns, rows


def _wandb(trainer: pl.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def _titles(datamodule):
    items = getattr(getattr(datamodule, "dataset", None), "items", None)
    table = {}
    if items is not None and "title" in items:
        table = dict(zip(items["item"].tolist(), items["title"].astype(str).tolist()))
    return lambda item: table.get(item) or f"item {item}"
