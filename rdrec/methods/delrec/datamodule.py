"""Batches for DELRec: prompt texts built from the training view and a trained SR model's predictions.

``task="rec"`` (stage 2) yields recommendation prompts (history + a candidate list of the SR model's top items
and random items, shuffled) with the next training item as target. ``task="stage1"`` yields, per example, one
Temporal Analysis prompt (history up to t-2 and the item at t; target: the item at t-1) and one Recommendation
Pattern Simulating prompt (history up to t-1; target: the SR model's first prediction). Training examples come
from ``train_view()`` only; the SR model's top-k for training prefixes is predicted here with the checkpoint of
the ``strategy=sr`` run named by ``sr_run``, which saw only training interactions as targets.

Evaluation batches are the shared ones (history, target, persisted candidate lists). A candidate list of kind
``sr_topk`` is DELRec's list (``rdrec.methods.delrec.candidates``), built from the SR run's ``topk/`` artifact.
Batches carry text and ids only; the strategy tokenizes (it owns the tokenizer and the soft-prompt length).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from rdrec.data.batches import Rows
from rdrec.data.candidates import load_or_create
from rdrec.data.datamodule import SeqRecDataModule
from rdrec.methods.delrec.candidates import KIND, load_or_create_sr_lists, training_candidates
from rdrec.methods.delrec.prompts import DelRecPrompts, display_titles
from rdrec.methods.delrec.sr_model import check_same_split, load_sr_model, predict_topk, read_topk, sr_model_name, sr_run_config
from rdrec.errors import DataError

log = logging.getLogger(__name__)
TASKS = ("rec", "stage1")


class PromptExamples(Rows):
    """A list of examples; ``collate`` stacks their fields (strings stay lists, ints become tensors)."""

    @staticmethod
    def collate(rows: list[dict]) -> dict:
        out = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            out[key] = values if isinstance(values[0], str) else torch.as_tensor(np.asarray(values), dtype=torch.long)
        return out


class DelRecDataModule(SeqRecDataModule):
    def __init__(
        self,
        *args,
        sr_run: str | None = None,
        candidate_sr_run: str | None = None,
        task: str = "rec",
        num_candidates: int = 20,
        n_sr: int = 10,
        examples_per_user: int | None = None,
        max_history: int = 10,
        templates: dict | None = None,
        model_name: str | None = None,
        stage1_tasks=("ta", "rps"),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if task not in TASKS:
            raise ValueError(f"data.task: expected one of {TASKS}, got {task!r}")
        if not sr_run:
            raise DataError("DELRec needs a trained SR model: set delrec.sr_run=<run dir of rdrec-train strategy=sr>",
                            field="sr_run")
        self.sr_run, self.candidate_sr_run = str(sr_run), str(candidate_sr_run or sr_run)
        self.task, self.num_candidates, self.n_sr = task, int(num_candidates), int(n_sr)
        self.examples_per_user, self.max_history = examples_per_user, int(max_history)
        self.templates, self.model_name = dict(templates or {}), model_name
        self.stage1_tasks = tuple(stage1_tasks)
        self.prompts: DelRecPrompts | None = None
        self._train: PromptExamples | None = None

    # ---- candidate lists: the shared kinds plus DELRec's sr_topk ------------------------------------------------
    def _candidate_lists(self, prepared, stage: str) -> dict:
        source = f"{type(self.source).__module__}.{type(self.source).__qualname__}"
        out = {}
        for name, spec in self.candidate_specs.items():
            if spec["kind"] == KIND:
                run = spec.get("sr_run") or self.candidate_sr_run
                check_same_split(run, self.split.seed, source)
                topk = read_topk(run, stage, prepared.stage_users(stage))
                out[name] = load_or_create_sr_lists(
                    self.cache_dir, prepared, stage, f"{run}/topk/{stage}.parquet", topk, int(spec["size"]),
                    int(spec.get("n_sr", self.n_sr)), self.split.seed,
                )
            else:
                out[name] = load_or_create(self.cache_dir, spec["kind"], prepared, stage, spec["size"],
                                           spec.get("strategy", "uniform"), self.split.seed)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        super().setup(stage)
        check_same_split(self.sr_run, self.split.seed, f"{type(self.source).__module__}.{type(self.source).__qualname__}")
        name = self.model_name or sr_model_name(self.sr_run)
        self.prompts = DelRecPrompts(display_titles(self.train_view.items), name, self.templates, self.max_history)

    # ---- training examples (training view only) --------------------------------------------------------------
    def _positions(self, seq: np.ndarray, first: int) -> list[int]:
        positions = list(range(len(seq) - 1, first - 1, -1))  # most recent first
        return positions[: self.examples_per_user] if self.examples_per_user else positions

    def build_train_examples(self) -> PromptExamples:
        view = self.train_view
        sr_cfg = sr_run_config(self.sr_run)
        model = load_sr_model(self.sr_run, view.num_items, view.num_users)
        rng = np.random.default_rng([int(self.split.seed), 7])  # training-list shuffles: seeded, reproducible
        width = min(self.n_sr + 1 + self.max_len, view.num_items)  # room for banned items skipped later
        first = 2 if self.task == "stage1" else 1
        keys = [(u, t) for u, seq in enumerate(view.sequences) for t in self._positions(seq, first)]
        if not keys:
            raise DataError("no training user has enough items for a DELRec example", field="train_view")
        need = {(u, t) for u, t in keys}
        if self.task == "stage1":
            need |= {(u, t - 1) for u, t in keys}
        need = sorted(need)
        log.info("DELRec: predicting the SR model's top-%d for %d training prefixes", width, len(need))
        top = predict_topk(model, [view.sequences[u][:t] for u, t in need], width, int(sr_cfg.data.max_len),
                           users=[u for u, _ in need])
        top_of = {key: row for key, row in zip(need, top)}
        examples = []
        for u, t in keys:
            seq = view.sequences[u]
            banned = set(seq.tolist())
            if self.task == "rec":
                cands, idx = training_candidates(seq[t], top_of[(u, t)], banned, self.num_candidates, self.n_sr,
                                                 view.num_items, rng)
                examples.append({"prompt": self.prompts.rec(seq[:t], cands), "target": int(seq[t])})
                continue
            example = {}
            if "ta" in self.stage1_tasks:  # infer the item at t-1 from the history before it and the item at t
                cands, _ = training_candidates(seq[t - 1], top_of[(u, t - 1)], banned, self.num_candidates,
                                               self.n_sr, view.num_items, rng)
                example["ta_prompt"] = self.prompts.ta(seq[: t - 1], seq[t], cands)
                example["ta_target"] = int(seq[t - 1])
            if "rps" in self.stage1_tasks:  # what the SR model ranks first after the history up to t-1
                sr_first = int(top_of[(u, t)][0])
                cands, _ = training_candidates(sr_first, top_of[(u, t)][1:], banned, self.num_candidates,
                                               self.n_sr - 1, view.num_items, rng)
                example["rps_prompt"] = self.prompts.rps(seq[:t], cands)
                example["rps_target"] = sr_first
            examples.append(example)
        log.info("DELRec: %d %s training examples", len(examples), self.task)
        return PromptExamples(examples)

    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            self._train = self.build_train_examples()
        return DataLoader(self._train, batch_size=self.batch_size,
                          sampler=self.order.sampler_for(self._train, self.batch_size), collate_fn=PromptExamples.collate,
                          num_workers=self.num_workers)
