"""DELRec stage 2: the stage-1 soft prompt frozen, AdaLoRA on the LLM, pick the next item among shown candidates.

``DelRecBase`` holds what both stages share: the LLM with its soft prompt (``SoftPromptLM``), the prompt codec,
and the scoring hook of the shared evaluator. ``score_candidates`` renders the recommendation prompt showing
exactly the candidates being ranked (in their persisted, shuffled order) and scores each by the log-likelihood
of its whole title (``rdrec.methods.delrec.scoring``). There is no ``score_all``: DELRec ranks what it shows, so
its strategy configs evaluate candidate protocols only.

Checkpoints keep only what training changes (the soft prompt and the adapters); the LLM's weights come from the
backbone config, so a 3B-parameter model is not copied into every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rdrec.backbones import Backbone
from rdrec.methods.delrec.scoring import PromptCodec, candidate_log_likelihood, lm_loss
from rdrec.methods.delrec.soft_prompt import SoftPromptLM
from rdrec.modules.base import RecModule

KEEP_IN_CHECKPOINT = ("soft_prompt", "lora_", "ranknum")


class DelRecBase(RecModule):
    def __init__(
        self,
        backbone: Backbone,
        protocols: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_soft_tokens: int = 100,
        soft_prompt_init: str = "vocab",
        reduction: str = "sum",
        ks=(1, 5, 10, 20),
        mrr_k: int | None = None,
        seed: int = 0,
    ):
        super().__init__(protocols, ks, mrr_k)
        self.lm = SoftPromptLM(backbone.model, backbone.kind, num_soft_tokens, soft_prompt_init, seed=seed)
        self.codec = PromptCodec(backbone.tokenizer, backbone.kind, num_soft_tokens)
        self.backbone_name, self.reduction, self.optimizer_factory = backbone.name, reduction, optimizer
        self.strict_loading = False  # checkpoints hold the trained parts only (see on_save_checkpoint)
        self.prompts = None
        self._titles: tuple[torch.Tensor, torch.Tensor] | None = None
        self._title_tokens: list[list[int]] = []

    # ---- data the module needs from the datamodule (titles, prompt texts) ------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.prompts is None and self.trainer is not None and self.trainer.datamodule is not None:
            self.use_prompts(self.trainer.datamodule.prompts)

    def use_prompts(self, prompts) -> None:
        self.prompts = prompts
        self._titles = self.codec.title_table(prompts.titles)
        self._title_tokens = [self.codec.target_ids(t) for t in prompts.titles]

    def target_tokens(self, items: torch.Tensor) -> list[list[int]]:
        return [self._title_tokens[int(i)] for i in items]

    def lm_inputs(self, texts: list[str], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = self.codec.training_inputs(texts, self.target_tokens(targets))
        return {k: v.to(self.device) for k, v in inputs.items()}

    # ---- scoring for the shared evaluator ----------------------------------------------------------------------------
    def score_all(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError(
            "DELRec ranks the candidates its prompt shows; evaluate it with candidate protocols only "
            "(the delrec strategy configs set eval.protocols.full and .sampled to null)"
        )

    def score_candidates(self, batch: dict, candidates: torch.Tensor) -> torch.Tensor:
        if self.prompts is None:
            raise RuntimeError("DELRec needs item titles: call use_prompts() or run it with a DelRecDataModule")
        history, shown = batch["history"].cpu().tolist(), candidates.cpu().tolist()
        return self.score_prompts([self.prompts.rec(h, c) for h, c in zip(history, shown)], candidates)

    def score_prompts(self, texts: list[str], candidates: torch.Tensor) -> torch.Tensor:
        """[B, C] log-likelihood of each candidate's whole title after each prompt text (any of the prompt kinds)."""
        side = "left" if self.lm.kind == "causal" else "right"
        prompts = {k: v.to(self.device) for k, v in self.codec.encode_prompts(texts, side).items()}
        ids, mask = self._titles
        cand = candidates.cpu()
        width = int(mask[cand].sum(-1).max())
        ids, mask = ids[cand][..., :width].to(self.device), mask[cand][..., :width].to(self.device)
        return candidate_log_likelihood(self.lm, prompts, ids, mask, self.reduction)

    # ---- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("nothing to train (frozen LLM and soft prompt): run with train=false to evaluate")
        return self.optimizer_factory(params=params)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if not any(part in k for part in KEEP_IN_CHECKPOINT)]:
            del state[key]

    def on_train_epoch_start(self) -> None:
        self.lm.train()  # from_pretrained returns models in eval mode; Lightning keeps modes as it finds them


def run_steps(trainer, default: int = 1000) -> int:
    """The run's real number of optimizer steps (``max_steps``, or batches × epochs after ``limit_train_batches``);
    ``default`` when there is no fitting trainer (evaluating a checkpoint: no schedule is used then)."""
    try:
        steps = int(trainer.estimated_stepping_batches)
    except Exception:  # noqa: BLE001 - not fitting
        steps = 0
    return steps if 0 < steps < 10**9 else default


def adalora_schedule(options: dict, total_steps: int) -> dict:
    """peft ``AdaLoraConfig`` fields with AdaLoRA's budget schedule sized to the run: ``total_step`` (null: the run's
    steps), and ``tinit`` (steps at the initial rank), ``tfinal`` (steps at the target rank) and ``deltaT`` (steps
    between rank reallocations), each a fraction of ``total_step`` when below 1. Kept valid for short runs:
    tinit + tfinal < total_step (peft refuses otherwise) and deltaT ≥ 1."""
    out = dict(options)
    total = int(out.get("total_step") or total_steps)
    if total < 1:
        raise ValueError(f"AdaLoRA needs at least one training step, got total_step={total}")
    out["total_step"] = total
    for key, default in (("tinit", 0), ("tfinal", 0), ("deltaT", 1)):
        value = out.get(key, default)
        out[key] = int(round(value * total)) if 0 < value < 1 else int(value)
    out["deltaT"] = max(1, out["deltaT"])
    while out["tinit"] + out["tfinal"] >= total and (out["tinit"] or out["tfinal"]):
        key = "tinit" if out["tinit"] >= out["tfinal"] else "tfinal"
        out[key] -= 1
    return out


class DelRecModule(DelRecBase):
    """Stage 2. ``soft_prompt``: the stage-1 vectors (``rdrec.methods.delrec.artifacts.load_soft_prompt``), or None
    for the "without stage 1" ablation (a random, frozen prompt). ``adalora``: peft ``AdaLoraConfig`` fields, or
    None for the "without AdaLoRA" ablation (nothing trains: evaluate with ``train=false``). ``tinit``/``tfinal``/
    ``deltaT`` below 1 are fractions of the run's number of steps (:func:`adalora_schedule`)."""

    def __init__(
        self,
        soft_prompt: torch.Tensor | None = None,
        adalora: dict | None = None,
        **base,  # DelRecBase's: backbone, protocols, optimizer, num_soft_tokens, soft_prompt_init, reduction, ks, …
    ):
        super().__init__(**base)
        if soft_prompt is not None:
            soft_prompt = torch.as_tensor(soft_prompt)
            if soft_prompt.shape != self.lm.soft_prompt.shape:
                raise ValueError(f"stage-1 soft prompt has shape {tuple(soft_prompt.shape)}, this LLM and "
                                 f"num_soft_tokens need {tuple(self.lm.soft_prompt.shape)}")
            with torch.no_grad():
                self.lm.soft_prompt.copy_(soft_prompt.to(self.lm.soft_prompt.dtype))
        self.lm.soft_prompt.requires_grad_(False)
        self.lm.model.requires_grad_(False)
        self.adalora = dict(adalora) if adalora is not None else None
        self._adapted = False

    def configure_model(self) -> None:
        if self.adalora is None or self._adapted:
            return
        from peft import AdaLoraConfig, TaskType, get_peft_model

        options = adalora_schedule(self.adalora, self._total_steps())
        self.schedule = {k: options[k] for k in ("total_step", "tinit", "tfinal", "deltaT")}
        task = TaskType.SEQ_2_SEQ_LM if self.lm.kind == "seq2seq" else TaskType.CAUSAL_LM
        self.lm.model = get_peft_model(self.lm.model, AdaLoraConfig(task_type=task, **options))
        self.lm.soft_prompt.requires_grad_(False)
        self._adapted = True

    def _total_steps(self) -> int:
        return run_steps(self.trainer)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = lm_loss(self.lm, self.lm_inputs(batch["prompt"], batch["target"]))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["prompt"]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._adapted:  # after the optimizer step, before Lightning zeroes the gradients
            self.lm.model.base_model.update_and_allocate(self.global_step)
        super().on_train_batch_end(outputs, batch, batch_idx)
