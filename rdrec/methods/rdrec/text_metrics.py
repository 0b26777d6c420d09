"""Text-generation metrics of the student's text tasks (explanations, rationales): BLEU-4 and ROUGE-1/2/L F1.

Thin wrapper over ``torchmetrics`` (DDP-safe states). References are compared at full length: nothing is cut to
the generation length, unlike evaluation code that truncates references to the model's output budget.
Scores are reported in [0, 100] as in the P5/POD/RDRec papers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.text import BLEUScore
from torchmetrics.text.rouge import ROUGEScore

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


class TextMetrics(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bleu: Metric = BLEUScore(n_gram=4)
        self.rouge: Metric = ROUGEScore(rouge_keys=ROUGE_KEYS)

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        preds, refs = [str(p) for p in predictions], [str(r) for r in references]
        self.bleu.update(preds, [[r] for r in refs])
        self.rouge.update(preds, refs)

    def compute(self) -> dict[str, float]:
        rouge = self.rouge.compute()
        out = {"bleu4": 100 * float(self.bleu.compute())}
        out.update({f"{k.replace('rougeL', 'rouge_l')}": 100 * float(rouge[f"{k}_fmeasure"]) for k in ROUGE_KEYS})
        return out

    def reset(self) -> None:
        self.bleu.reset()
        self.rouge.reset()


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-4 and ROUGE-1/2/L F1 (×100) of a whole corpus of predictions against one reference each."""
    metrics = TextMetrics()
    metrics.update(predictions, references)
    return metrics.compute()
