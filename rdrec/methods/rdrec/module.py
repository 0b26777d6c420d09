"""Lightning module of the RDRec / POD student (``strategy=rdrec`` / ``strategy=pod``).

The two strategies differ only in their data: RDRec mixes in the rationale tasks (user preference, item
attributes) that POD lacks. Training minimises token cross-entropy over the mixed batch (padding labelled -100
never counts). Evaluation goes through the shared evaluator:

- ``score_all``: beam search over item IDs, constrained by a prefix trie so every beam is a valid item; an
  item's score is its beam's log-likelihood, items no beam reached get -inf. When every full-ranking protocol
  excludes seen items (``eval.exclude_seen``, the same switch for every method), the trie also bans each user's
  history items inside the search, so every user gets ``num_beams`` distinct unseen items to rank instead of what
  is left of ``num_beams`` after the protocol removes the seen ones (a re-consumed target, which the protocol
  keeps rankable, is then never decoded: the decoder cannot know it is the target);
- ``score_candidates``: the exact log-likelihood of each candidate's ID under the sequential prompt.

The model is built in ``configure_model`` (before Lightning restores a checkpoint) from the tokenizer the
datamodule trained on the training text, or from the pretrained backbone's own tokenizer, grown by the item-ID
scheme's new tokens.

Parameter groups: ``lr_multipliers`` scales the optimizer's learning rate for ``soft_prompt`` (POD's prompts),
``whole_word`` (whole-word vectors) and ``embedding`` (the token embeddings, item tokens included); the rest keep
the base rate. From-scratch T5 initialises embeddings with std 1, so at one rate these groups barely move. After
fit, each group's relative weight change ``||W - W0|| / ||W0||`` goes into the run's metrics as
``train/rel_change/<group>`` (plus ``item_tokens``: the embedding rows of the scheme's new tokens).
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

GROUPS = ("soft_prompt", "whole_word", "embedding", "rest")


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
        lr_multipliers: dict[str, float] | None = None,
    ):
        super().__init__(protocols, ks, mrr_k)
        self.backbone, self.optimizer_factory = backbone, optimizer
        self.num_items, self.num_users = num_items, num_users
        self.prompt_length, self.max_whole_words = prompt_length, max_whole_words
        self.num_beams, self.candidate_chunk, self.warmup_ratio = num_beams, candidate_chunk, warmup_ratio
        self.text_max_new_tokens = text_max_new_tokens
        self.lr_multipliers = {k: float(v) for k, v in dict(lr_multipliers or {}).items() if v is not None}
        unknown = set(self.lr_multipliers) - set(GROUPS)
        if unknown:
            raise ValueError(f"strategy.lr_multipliers: unknown group(s) {sorted(unknown)}; groups are {list(GROUPS)}")
        full = [p for p in self.protocols.values() if hasattr(p, "exclude_seen")]
        # one beam search serves every full-ranking protocol of a batch: ban seen items only if all of them drop them
        self.ban_seen = bool(full) and all(p.exclude_seen for p in full)
        self.item_token_ids: list[int] = []
        self._initial: dict[str, torch.Tensor] = {}
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
        new = dm.item_ids.new_tokens() if getattr(dm, "item_ids", None) is not None else []
        self.build(dm.tokenizer, dm.item_tokens(), new_token_ids=dm.tokenizer.convert_tokens_to_ids(new))
        if self.trainer.state.fn == "fit":  # the seeded start, before a resumed fit loads its checkpoint over it
            self._take_start()

    def build(self, tokenizer, item_tokens: dict[int, list[int]], new_token_ids: list[int] | None = None) -> None:
        """Create the student for ``tokenizer`` and the decoding trie over ``item_tokens`` (item → token ids);
        ``new_token_ids``: the item-ID scheme's tokens (their embedding rows are reported apart)."""
        backbone = self.backbone if isinstance(self.backbone, Backbone) else self.backbone(tokenizer=tokenizer)
        if len(tokenizer) > backbone.model.get_input_embeddings().num_embeddings:  # a pretrained T5 + item tokens
            backbone.model.resize_token_embeddings(len(tokenizer))
        self.item_token_ids = list(new_token_ids or [])
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

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The student's parameters by group (soft_prompt, whole_word, embedding, rest); each parameter once."""
        named = {
            "soft_prompt": [self.model.prompts],
            "whole_word": [self.model.whole_word.weight],
            "embedding": [self.model.t5.get_input_embeddings().weight],
        }
        taken = {id(p) for ps in named.values() for p in ps}
        named["rest"] = [p for p in self.parameters() if id(p) not in taken]  # a tied output layer is the embedding
        return named

    def configure_optimizers(self):
        groups = [{"params": ps, "name": name, "lr_scale": self.lr_multipliers.get(name, 1.0)}
                  for name, ps in self.parameter_groups().items() if ps]
        optimizer = self.optimizer_factory(params=groups)
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]  # before the scheduler records each group's initial rate
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        warmup = max(int(self.warmup_ratio * total), 1)

        def schedule(step: int) -> float:  # linear warmup, then linear decay to 0 (POD / RDRec)
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(total - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- how far each parameter group moved during fit ---------------------------------------------------------
    def _group_weights(self) -> dict[str, torch.Tensor]:
        out = {name: torch.cat([p.detach().float().reshape(-1) for p in ps]).cpu()
               for name, ps in self.parameter_groups().items() if ps}
        if self.item_token_ids:
            rows = torch.as_tensor(self.item_token_ids, dtype=torch.long)
            out["item_tokens"] = self.model.t5.get_input_embeddings().weight.detach().float().cpu()[rows].reshape(-1)
        return out

    def _take_start(self) -> None:
        self._initial = {k: v.clone() for k, v in self._group_weights().items()}

    def on_fit_start(self) -> None:
        if not self._initial:  # (a model built before fit, not by configure_model)
            self._take_start()

    def on_fit_end(self) -> None:
        if not self._initial:
            return
        for name, now in self._group_weights().items():
            start = self._initial[name]
            self.eval_results[f"train/rel_change/{name}"] = float((now - start).norm() / start.norm().clamp_min(1e-12))
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in self.eval_results.items() if k.startswith("train/rel_change/")},
                               step=self.global_step)

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
        allowed = self.trie.banning(batch["seen"].tolist()) if self.ban_seen else self.trie.prefix_allowed_tokens_fn
        sequences, scores = self.model.beam_search(encoded, mask, self.num_beams, self.trie.max_length, allowed)
        return self.trie.scores_from_beams(sequences, scores, self.num_items)

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        encoded, mask = self._encode(batch)
        rows_n, cols = candidates.shape
        flat = candidates.reshape(-1).to(self.item_labels.device)
        labels = self.item_labels[flat]
        rows = torch.arange(rows_n, device=labels.device).repeat_interleave(cols)
        scores = self.model.sequence_log_likelihood(encoded, mask, labels, rows, self.candidate_chunk).view(rows_n, cols)
        return scores.masked_fill(candidates.to(scores.device) == 0, float("-inf"))
