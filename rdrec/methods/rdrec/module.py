"""Lightning module of the RDRec / POD student (``strategy=rdrec`` / ``strategy=pod``).

The two strategies differ only in their data: RDRec mixes in the rationale tasks (user preference, item
attributes) that POD lacks. Training minimises token cross-entropy over the mixed batch (padding labelled -100
never counts). Evaluation goes through the shared evaluator:

- ``score_all``: beam search over item IDs, constrained by a prefix trie so every beam is a valid item; an
  item's score is its beam's log-likelihood, items no beam reached get -inf (seen-item filtering is the
  protocol's ``exclude_seen``, identical for every method);
- ``score_candidates``: the exact log-likelihood of each candidate's ID under the sequential prompt.

The model is built in ``configure_model`` (before Lightning restores a checkpoint) from the tokenizer the
datamodule trained on the training text, or from the pretrained backbone's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rdrec.backbones import Backbone
from rdrec.methods.rdrec.tasks import TASKS
from rdrec.methods.rdrec.trie import ItemTrie
from rdrec.methods.rdrec.text_metrics import TextMetrics
from rdrec.methods.rdrec.pod import PODStudent
from rdrec.modules.base import RecModule


class RDRecStudentModule(RecModule):
    def __init__(
        self,
        backbone: Backbone | Callable[..., Backbone],
        num_items: int,
        num_users: int,
        protocols: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        prompt_length: int = 3,
        max_whole_words: int = 512,
        num_beams: int = 20,
        candidate_chunk: int = 1024,
        warmup_ratio: float = 0.05,
        text_max_new_tokens: int = 64,
        ks=(1, 5, 10, 20),
        mrr_k: int | None = None,
    ):
        super().__init__(protocols, ks, mrr_k)
        self.backbone, self.optimizer_factory = backbone, optimizer
        self.num_items, self.num_users = num_items, num_users
        self.prompt_length, self.max_whole_words = prompt_length, max_whole_words
        self.num_beams, self.candidate_chunk, self.warmup_ratio = num_beams, candidate_chunk, warmup_ratio
        self.text_max_new_tokens = text_max_new_tokens
        self.text_metrics = TextMetrics()  # explanation generation, on targets that have a review
        self.model: PODStudent | None = None
        self.trie: ItemTrie | None = None

    # ---- building ----------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        dm = self.trainer.datamodule
        if isinstance(self.backbone, Backbone):
            dm.use_tokenizer(self.backbone.tokenizer)
        self.build(dm.tokenizer, dm.item_tokens())

    def build(self, tokenizer, item_tokens: dict[int, list[int]]) -> None:
        """Create the student for ``tokenizer`` and the decoding trie over ``item_tokens`` (item → token ids)."""
        backbone = self.backbone if isinstance(self.backbone, Backbone) else self.backbone(tokenizer=tokenizer)
        self.backbone_name, self.tokenizer = backbone.name, tokenizer
        self.model = PODStudent(backbone.model, num_tasks=len(TASKS), prompt_length=self.prompt_length,
                                max_whole_words=self.max_whole_words)
        config = backbone.model.config
        self.trie = ItemTrie(item_tokens, config.eos_token_id, config.pad_token_id, config.decoder_start_token_id)
        width = max(len(t) for t in item_tokens.values()) + 1
        table = torch.full((self.num_items + 1, width), -100, dtype=torch.long)
        for item, tokens in item_tokens.items():
            table[item, : len(tokens) + 1] = torch.tensor([*tokens, config.eos_token_id])
        self.register_buffer("item_labels", table.to(self.device), persistent=False)

    # ---- training ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["input_ids"], batch["attention_mask"], batch["whole_word_ids"], batch["task"],
                          batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["task"]))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        warmup = max(int(self.warmup_ratio * total), 1)

        def schedule(step: int) -> float:  # linear warmup, then linear decay to 0 (POD / RDRec)
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(total - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- text tasks: explanation generation on test targets with a review ------------------------------------
    def test_step(self, batch: dict, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        exp = batch.get("explanation")
        if exp:
            with torch.no_grad():
                encoded, mask = self.model.encode(exp["input_ids"], exp["attention_mask"], exp["whole_word_ids"],
                                                  exp["task"])
                ids = self.model.generate_text(encoded, mask, self.text_max_new_tokens)
            self.text_metrics.update(self.tokenizer.batch_decode(ids, skip_special_tokens=True), exp["references"])

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        dm = getattr(self.trainer, "datamodule", None)
        for key, value in (getattr(dm, "coverage", None) or {}).items():  # rationale coverage, into metrics.json
            self.eval_results[f"data/rationale_{key}"] = float(value)
        if self.text_metrics.bleu.update_called:
            results = {f"test/explanation/{k}": v for k, v in self.text_metrics.compute().items()}
            self.eval_results.update(results)
            self.log_dict(results, sync_dist=False)
        self.text_metrics.reset()

    # ---- scoring for the shared evaluator ------------------------------------------------------------------------
    def _encode(self, batch: dict):
        return self.model.encode(batch["input_ids"], batch["attention_mask"], batch["whole_word_ids"], batch["task"])

    def score_all(self, batch: dict) -> torch.Tensor:
        encoded, mask = self._encode(batch)
        sequences, scores = self.model.beam_search(encoded, mask, self.num_beams, self.trie.max_length,
                                                   self.trie.prefix_allowed_tokens_fn)
        return self.trie.scores_from_beams(sequences, scores, self.num_items)

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        encoded, mask = self._encode(batch)
        rows_n, cols = candidates.shape
        flat = candidates.reshape(-1).to(self.item_labels.device)
        labels = self.item_labels[flat]
        rows = torch.arange(rows_n, device=labels.device).repeat_interleave(cols)
        scores = self.model.sequence_log_likelihood(encoded, mask, labels, rows, self.candidate_chunk).view(rows_n, cols)
        return scores.masked_fill(candidates.to(scores.device) == 0, float("-inf"))
