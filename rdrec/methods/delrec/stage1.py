"""DELRec stage 1: distil the SR model's patterns into the soft prompt; the LLM stays frozen.

Two prompt tasks, both holding the soft prompt as "the recommendation pattern of {model}": Temporal Analysis
(TA: infer the item consumed between the history and a known later item) and Recommendation Pattern Simulating
(RPS: predict the SR model's first recommendation among its top items and random ones). Each is a token
cross-entropy on the answer's title. Their weighting is ``fixed`` (``weights``) or ``dynamic``: Dynamic Weight
Averaging (Liu et al., CVPR 2019) — every ``window`` steps each task's weight becomes
K·softmax(r_i / T), r_i = (mean loss of the last window) / (mean loss of the window before), so the task whose
loss falls more slowly gets more weight; weights sum to K (the number of tasks) and start equal. ``dwa_window``
below 1 is a fraction of the run's optimizer steps (0.1: ten windows), so DWA acts in short runs too.

Only ``lm.soft_prompt`` requires gradients, so the optimizer never sees an LLM weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rdrec.methods.delrec.module import DelRecBase, run_steps
from rdrec.methods.delrec.scoring import lm_loss

TASKS = ("ta", "rps")


class DynamicWeightAverage:
    def __init__(self, tasks: Sequence[str], temperature: float = 2.0, window: int = 50):
        self.tasks, self.temperature, self.window = tuple(tasks), float(temperature), int(window)
        self.current = {t: 1.0 for t in self.tasks}
        self._sums = {t: 0.0 for t in self.tasks}
        self._count = 0
        self._previous: dict[str, float] | None = None

    def weights(self) -> dict[str, float]:
        return dict(self.current)

    def update(self, losses: dict[str, float]) -> None:
        for t in self.tasks:
            self._sums[t] += float(losses[t])
        self._count += 1
        if self._count < self.window:
            return
        means = {t: self._sums[t] / self._count for t in self.tasks}
        if self._previous is not None:
            ratios = torch.tensor([means[t] / max(self._previous[t], 1e-12) for t in self.tasks])
            w = len(self.tasks) * torch.softmax(ratios / self.temperature, 0)
            self.current = {t: float(v) for t, v in zip(self.tasks, w)}
        self._previous, self._sums, self._count = means, {t: 0.0 for t in self.tasks}, 0


def dwa_window_steps(window: float, total_steps: int) -> int:
    """DWA's window in steps: ``window`` itself from 1 on, else that fraction of the run's steps (at least 1)."""
    return int(window) if window >= 1 else max(1, int(round(window * total_steps)))


class DelRecStage1Module(DelRecBase):
    def __init__(
        self,
        tasks: Sequence[str] = TASKS,
        weighting: str = "dynamic",
        weights: dict | None = None,
        dwa_temperature: float = 2.0,
        dwa_window: float = 0.1,
        **base,  # DelRecBase's: backbone, protocols, optimizer, num_soft_tokens, soft_prompt_init, reduction, ks, …
    ):
        super().__init__(**base)
        self.tasks = tuple(tasks)
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise ValueError(f"strategy.tasks: expected a non-empty subset of {TASKS}, got {list(tasks)}")
        if weighting not in ("fixed", "dynamic"):
            raise ValueError(f"strategy.weighting: expected 'fixed' or 'dynamic', got {weighting!r}")
        self.weighting = weighting
        self.fixed_weights = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}
        if dwa_window <= 0:
            raise ValueError(f"strategy.dwa_window: expected > 0 (steps, or below 1 a fraction of the run), got {dwa_window}")
        self.dwa_window = dwa_window
        self.dwa = DynamicWeightAverage(self.tasks, dwa_temperature, int(dwa_window) if dwa_window >= 1 else 1)
        self.lm.model.requires_grad_(False)  # the LLM is frozen: only the soft prompt learns
        self.lm.soft_prompt.requires_grad_(True)

    def on_fit_start(self) -> None:
        if self.dwa_window < 1:  # a fraction of the run's real number of steps
            self.dwa.window = dwa_window_steps(self.dwa_window, run_steps(self.trainer))

    def task_weights(self) -> dict[str, float]:
        return self.dwa.weights() if self.weighting == "dynamic" else dict(self.fixed_weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        weights = self.task_weights()
        losses = {}
        for task in self.tasks:
            losses[task] = lm_loss(self.lm, self.lm_inputs(batch[f"{task}_prompt"], batch[f"{task}_target"]))
        loss = sum(weights[t] * losses[t] for t in self.tasks)
        self.dwa.update({t: losses[t].detach() for t in self.tasks})
        size = len(batch[f"{self.tasks[0]}_prompt"])
        for t in self.tasks:
            self.log(f"train/loss_{t}", losses[t], on_step=False, on_epoch=True, batch_size=size)
            self.log(f"train/weight_{t}", weights[t], on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        return loss
