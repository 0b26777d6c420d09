"""Evaluation shared by every strategy: the module scores, the protocols and metrics do the rest.

A strategy subclasses ``RecModule`` and implements ``score_all(batch)`` (scores for item ids 0..num_items,
column 0 = padding) and, when it can score a candidate list more cheaply than all items,
``score_candidates(batch, candidates)``. Validation and test then run every configured protocol through the
same ``RankingMetrics``, so all strategies are measured identically (docs/protocol.md).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from rdrec.eval.ranking import RankingMetrics, metric_names, pessimistic_rank

STAGES = {"val": "valid", "test": "test"}


class RecModule(pl.LightningModule):
    def __init__(self, protocols: dict, ks=(1, 5, 10, 20), mrr_k: int | None = None):
        super().__init__()
        self.protocols = {name: p for name, p in protocols.items() if p is not None}
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_{name}": RankingMetrics(ks=tuple(ks), mrr_k=mrr_k) for stage in STAGES for name in self.protocols}
        )
        # results of the last finished evaluation of each stage/protocol, at full (float64) precision, and the
        # per-user ranks behind them: {"test/sampled/hr@10": 0.41, …}, {"test/sampled": (users, ranks)}
        self.eval_results: dict[str, float] = {}
        self.eval_ranks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.validated_at_step: int | None = None  # global step of the last full validation (not the sanity check)
        self.eval_journal = None  # a rdrec.eval.journal.ScoreJournal while rdrec.callbacks.EvalJournal has one open

    @classmethod
    def monitorable_keys(cls, protocols: dict, ks=(1, 5, 10, 20), mrr_k: int | None = None) -> set[str]:
        """The validation keys ``_log_metrics`` will log for these protocols: what ``eval.monitor`` may name."""
        return {f"{p.metric_prefix('val')}/{m}" for p in protocols.values() if p is not None
                for m in metric_names(ks, mrr_k)}

    # ---- the scoring interface ---------------------------------------------------------------------------
    def score_all(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        return self.score_all(batch).gather(1, candidates)

    # ---- evaluation --------------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._update_metrics(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._update_metrics(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _update_metrics(self, batch: dict, stage: str) -> None:
        scorer = _ScoreAllOnce(self)  # e.g. eval=benchmark's two full-ranking protocols share one forward pass
        journal = self.eval_journal  # a resumed pass reads the ranks a killed one computed (rdrec.eval.journal)
        users = batch["user"]
        with torch.no_grad():
            for name, protocol in self.protocols.items():
                ranks = journal.get(name, users) if journal is not None else None
                if ranks is None:
                    scores, target_index, valid = protocol(scorer, batch)
                    ranks = pessimistic_rank(scores, target_index, valid)
                    if journal is not None:
                        journal.put(name, users, ranks)
                self.metrics[f"{stage}_{name}"].update(None, None, users, ranks=ranks)

    def _log_metrics(self, stage: str) -> None:
        for name, protocol in self.protocols.items():
            metric = self.metrics[f"{stage}_{name}"]
            prefix = protocol.metric_prefix(stage)
            values = metric.compute()  # already gathered across processes
            self.eval_ranks[prefix] = metric.per_user()
            results = {f"{prefix}/{k}": float(v) for k, v in values.items()}
            self.eval_results.update(results)
            self.log_dict(results, sync_dist=False)
            metric.reset()


class _ScoreAllOnce:
    """The module's scoring interface for one batch, with ``score_all`` computed at most once.

    Protocols never modify the scores they receive, so sharing the tensor between them is safe.
    """

    def __init__(self, module: RecModule):
        self.module, self._all = module, None

    def score_all(self, batch: dict) -> torch.Tensor:
        if self._all is None:
            self._all = self.module.score_all(batch)
        return self._all

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        if type(self.module).score_candidates is RecModule.score_candidates:  # the default gathers from score_all
            return self.score_all(batch).gather(1, candidates)
        return self.module.score_candidates(batch, candidates)
