"""SLIM's recommender (Wang et al., WWW 2024) as a Lightning module: text vectors fused into a sequential
recommender (ID-based) or matched on their own (ID-agnostic), trained with BCE, evaluated by the shared evaluator.

The variants of the paper are this module with different switches and data:

- backbone:                       ``use_user_text=false use_item_text=false`` (the same BCE training)
- backbone⁺ (item text):          ``use_user_text=false``
- backbone + teacher rationales:  ``data.rationales=<teacher export>``
- SLIM:                           ``data.rationales=<student export>``
- ID-agnostic:                    ``mode=matching``

Losses, optimiser and scoring hooks are ``SeqRecModule``'s (BCE with one uniform negative per target by
default, as the paper; ``loss=ce`` works too). The text tables come from the datamodule
(``rdrec.methods.slim.rec_data.SlimRecDataModule``) in ``setup``; they are data, never trained, never checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rdrec.models.base import SequentialRecommender
from rdrec.methods.slim.fusion import SlimFusion, SlimMatching
from rdrec.modules.seqrec import SeqRecModule


class SlimRecModule(SeqRecModule):
    def __init__(
        self,
        model: Callable[..., SequentialRecommender] | None,
        num_items: int,
        num_users: int,
        protocols: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        mode: str = "fusion",
        text_dim: int = 384,
        use_user_text: bool = True,
        use_item_text: bool = True,
        fusion_dropout: float = 0.1,
        matching_hidden_size: int = 64,
        history_text: bool = False,
        temperature: float = 0.1,
        loss: str = "bce",
        train_encoder: bool = False,
        ks=(1, 5, 10, 20),
        mrr_k: int | None = None,
    ):
        if mode not in ("fusion", "matching"):
            raise ValueError(f"strategy.mode: expected 'fusion' or 'matching', got {mode!r}")
        if mode == "fusion" and model is None:
            raise ValueError("strategy.model: ID-based fusion needs a sequential recommender (seqrec=…)")

        def build(num_items: int, num_users: int):
            if mode == "matching":
                return SlimMatching(num_items, text_dim, matching_hidden_size, history_text, temperature, num_users)
            return SlimFusion(model(num_items=num_items, num_users=num_users), text_dim=text_dim,
                              use_user_text=use_user_text, use_item_text=use_item_text, dropout=fusion_dropout)

        super().__init__(build, num_items, num_users, protocols, optimizer, loss, ks, mrr_k)
        matching = mode == "matching"  # ID-agnostic matching always reads both text tables
        self.uses = {"user": use_user_text or matching, "item": use_item_text or matching}
        self.text_dim, self.mode, self.train_encoder = text_dim, mode, train_encoder
        self.encoder = None  # set in setup() when the encoder is fine-tuned

    def setup(self, stage: str | None = None) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "item_text"):
            raise RuntimeError("SlimRecModule needs a SlimRecDataModule (data._target_=rdrec.methods.slim.rec_data.SlimRecDataModule)")
        if self.uses["user"] and not getattr(dm, "rationales", None):
            raise ValueError("this SLIM variant reads user rationales, but data.rationales is not set "
                             "(slim.student_rationales=<export> / slim.teacher_rationales=<export>)")
        tables = {"user": dm.rationale_text, "item": dm.item_text}
        for side, used in self.uses.items():
            if used and tables[side].size(1) != self.text_dim:
                raise ValueError(f"strategy.text_dim={self.text_dim} but the encoder gives {tables[side].size(1)}-d vectors")
        if self.uses["user"]:  # each rationale with the end of its history window: the leak rule (fusion.py)
            self.model.set_rationales(dm.rationale_text, dm.rationale_rows, dm.rationale_ends)
        self.model.set_text(item_text=tables["item"] if self.uses["item"] else None)
        if self.train_encoder and self.encoder is None:
            self.encoder = dm.build_encoder()
            self.encoder.trainable = True
            self.encoder.requires_grad_(True)
            self._texts = {"user": list(dm.rationale_texts), "item": list(dm.item_texts) or [""] * (self.num_items + 1)}
        for key, value in getattr(dm, "coverage", {}).items():  # lands in metrics.json beside the test numbers
            self.eval_results[f"data/{key}"] = float(value) if self.uses["user"] else 0.0

    # ---- a fine-tuned encoder (train_encoder=true): text tables recomputed from the texts -----------------------
    # Every training step re-encodes all item texts and the batch's rationales with gradients (cheap on a GPU,
    # slow on a CPU); evaluation re-encodes everything once per epoch without gradients.
    def _refresh_text(self, users: torch.Tensor | None = None) -> None:
        enc = self.encoder
        item = enc(self._texts["item"]) if self.uses["item"] else None
        if self.uses["user"]:
            table = self.model.rationales
            if users is None:
                rows = torch.arange(table.text.size(0), device=table.text.device)
            else:  # the rationales of the batch's users (row 0 is "none" and stays zero)
                rows = table.rows[users.clamp(max=table.rows.size(0) - 1)].unique()
                rows = rows[rows > 0]
            text = table.text.detach().clone()
            if len(rows):
                text = text.index_put((rows,), enc([self._texts["user"][r] for r in rows.tolist()]).to(text))
            table.set_vectors(text)
        self.model.set_text(item_text=item)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.encoder is not None:
            self._refresh_text(batch["user"])
        # as SeqRecModule's, with the windows' ends: a rationale reaches only targets after its history window
        hidden, targets = self.model.training_pairs(batch["items"], batch["user"], batch.get("end"))
        labelled = targets > 0
        hidden, targets = hidden[labelled], targets[labelled]  # [P, D], [P]
        loss = self.cross_entropy(hidden, targets) if self.loss_name == "ce" else self.sampled_bce(hidden, targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def _refresh_for_eval(self) -> None:
        if self.encoder is not None:
            with torch.no_grad():
                self._refresh_text()

    def on_validation_epoch_start(self) -> None:
        self._refresh_for_eval()

    def on_test_epoch_start(self) -> None:
        self._refresh_for_eval()
