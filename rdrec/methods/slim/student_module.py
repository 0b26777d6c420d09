"""SLIM's student (Wang et al., WWW 2024): a causal LM, LoRA-fine-tuned on (simplified prompt → teacher rationale).

- The backbone (``rdrec.backbones.Backbone``, kind ``causal``) is frozen and wrapped by ``peft`` LoRA adapters;
  only the adapters train (``lora``: any ``peft.LoraConfig`` field; default r=8, α=16 on the attention
  projections peft knows for the architecture).
- The prompt is rendered exactly as the generation backend renders a one-message chat
  (``rdrec.teacher.backends.transformers.TransformersBackend.render``: the tokenizer's chat template with the
  generation prompt, or the text and a blank line when there is none), so the student generates from the
  prompt format it was trained on.
- Loss: token NLL of the rationale and the end-of-sequence token only; prompt and padding positions carry
  label -100 and never enter the loss (``encode_pairs``), and the vocabulary projection runs only at the
  positions that predict a labelled token (``rdrec.backbones.heads.labelled_nll``).
- Test (the held-out users) also *generates*: with ``generate_tokens > 0`` the student answers each held-out
  prompt greedily, decoded by the teacher runner's transformers backend with the parser's stop rule (as
  ``rdrec-generate`` decodes with the merged student), and the test metrics add the parse rate (answers that
  ``parser``, the teacher's SLIM parser, splits into three steps) and BLEU-4 / ROUGE-1/2/L F of the answer
  against the teacher's rationale (``test/parse_rate``, ``test/bleu4``, ``test/rouge{1,2,L}_f``); the answers
  land in ``generations``.
- Checkpoints hold the trainable (LoRA) weights only, so a 7B student's checkpoint is megabytes;
  ``merged_model()`` gives a plain HF model with the adapters merged in, which
  ``rdrec.backbones.save.SaveBackbone`` writes for ``rdrec-generate`` to load as a backend.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from rdrec.backbones import Backbone
from rdrec.backbones.heads import IGNORE, labelled_nll


def render_prompt(tokenizer, prompt: str) -> str:
    """The generation-time text of a one-message user chat (same rule as the transformers backend)."""
    chat = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return prompt + "\n\n"


def encode_pairs(tokenizer, prompts: list[str], targets: list[str], max_length: int = 512) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (−100 on prompt and padding positions).

    Prompt and target are tokenised apart, as generation sees them (the prompt's tokens, then new tokens); the
    target ends with the end-of-sequence token. Too long: the prompt loses its oldest tokens first, then the
    target its last ones."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the student's tokenizer has no end-of-sequence token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for prompt, target in zip(prompts, targets, strict=True):
        p = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        t = t[:max_length - 1]
        p = p[-(max_length - len(t)):]
        rows.append((p, t))
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        labels[i, len(p):n] = torch.tensor(t)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SlimStudentModule(pl.LightningModule):
    def __init__(self, backbone: Backbone, optimizer: Callable[..., torch.optim.Optimizer], lora: dict | None = None,
                 max_length: int = 512, parser=None, generate_tokens: int = 0, repetition_penalty: float = 1.1):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        if backbone.kind != "causal":
            raise ValueError(f"SLIM's student is a causal LM; backbone {backbone.name} is {backbone.kind}")
        self.tokenizer, self.backbone_name = backbone.tokenizer, backbone.name
        config = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, **dict(lora or {})}
        if config.get("target_modules") is not None:
            config["target_modules"] = list(config["target_modules"])
        self.model = get_peft_model(backbone.model, LoraConfig(task_type="CAUSAL_LM", **config))
        self.model.train()  # from_pretrained gives eval mode; Lightning keeps modules' modes, so LoRA dropout would be off
        self.optimizer_factory, self.max_length = optimizer, max_length
        self.strict_loading = False  # checkpoints hold the trainable weights only (on_save_checkpoint)
        self.eval_results: dict[str, float] = {}
        self._sums: dict[str, list[float]] = {}
        # parser: an object with .parse(text) -> dict that raises on a malformed answer (rdrec.teacher.prompts.SlimFamily)
        self.parser, self.generate_tokens, self.repetition_penalty = parser, int(generate_tokens), repetition_penalty
        if self.generate_tokens and parser is None:
            raise ValueError("strategy.generate_tokens > 0 needs strategy.parser (the teacher's SLIM prompt family)")
        self.generations: list[dict] = []

    @classmethod
    def monitorable_keys(cls, protocols: dict, ks=(), mrr_k: int | None = None) -> set[str]:
        """What ``_finish`` logs after validation (the student ranks nothing: the protocols do not matter)."""
        return {"val/loss", "val/perplexity", "val/tokens"}

    # ---- training ------------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        enc = encode_pairs(self.tokenizer, batch["prompt"], batch["target"], self.max_length)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        # the vocabulary projection only at the positions that predict a rationale token (rdrec.backbones.heads)
        return labelled_nll(self.model, enc["labels"], input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, tokens = self(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["prompt"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._accumulate("test", batch)
        if self.generate_tokens:
            for user, prompt, target, text in zip(batch["user"].tolist(), batch["prompt"], batch["target"],
                                                  self.generate(batch["prompt"])):
                self.generations.append({"user": user, "prompt": prompt, "teacher": target, "student": text,
                                         "parsed": self._parses(text)})

    def _parses(self, text: str) -> bool:
        try:
            self.parser.parse(text)
        except Exception:  # the parser's ParseError or any malformed answer
            return False
        return True

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy answers to ``prompts``, decoded as ``rdrec-generate`` decodes with the merged student: the
        teacher runner's transformers backend (its loop, its repetition penalty) and the parser family's stop
        rule (``parser.stop``, when the parser has one), so the test's parse rate is the runner's."""
        from rdrec.teacher.backends.base import GenerationParams
        from rdrec.teacher.backends.transformers import TransformersBackend

        backend = TransformersBackend.around(self.model, self.tokenizer)  # its prompt limit, as the runner's
        params = GenerationParams(max_new_tokens=self.generate_tokens, do_sample=False,
                                  repetition_penalty=self.repetition_penalty)
        stop = self.parser.stop("user") if callable(getattr(self.parser, "stop", None)) else None
        was = self.model.training
        self.model.eval()
        try:
            gens = backend.generate([[{"role": "user", "content": p}] for p in prompts], [0] * len(prompts), params,
                                    stop=stop)
        finally:
            self.model.train(was)
        return [g.text.strip() for g in gens]

    def _generation_metrics(self) -> dict[str, float]:
        from torchmetrics.text import BLEUScore
        from torchmetrics.text.rouge import ROUGEScore

        gens = self.generations
        preds, refs = [g["student"] for g in gens], [g["teacher"] for g in gens]
        out = {"test/parse_rate": sum(g["parsed"] for g in gens) / len(gens), "test/answers": float(len(gens)),
               "test/bleu4": float(BLEUScore(n_gram=4, smooth=True)(preds, [[r] for r in refs]))}
        rouge = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(preds, refs)
        out.update({f"test/{k}_f": float(rouge[f"{k}_fmeasure"]) for k in ("rouge1", "rouge2", "rougeL")})
        return out

    def _accumulate(self, stage: str, batch: dict) -> None:
        loss, tokens = self(batch)
        acc = self._sums.setdefault(stage, [0.0, 0])
        acc[0] += float(loss) * tokens
        acc[1] += tokens

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        self.generations = []

    def on_test_epoch_end(self) -> None:
        self._gather_generations()
        self._finish("test")

    def _gather_generations(self) -> None:
        """Under DDP every rank answered its share of the held-out users: the parse rate and BLEU/ROUGE are over
        all of them (each user once: a distributed sampler may repeat a user to even out the shares)."""
        if self.trainer is None or self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        parts: list = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(parts, self.generations)
        by_user = {}
        for part in parts:
            for g in part:
                by_user.setdefault(g["user"], g)
        self.generations = [by_user[u] for u in sorted(by_user)]

    def _finish(self, stage: str) -> None:
        total, tokens = self._sums.pop(stage, [0.0, 0])
        total, tokens = self._sync(total, tokens)
        nll = total / max(tokens, 1)
        results = {f"{stage}/loss": nll, f"{stage}/perplexity": math.exp(min(nll, 50.0)), f"{stage}/tokens": float(tokens)}
        if stage == "test" and self.generations:
            results.update(self._generation_metrics())
            for g in self.generations[:3]:
                print(f"student (user {g['user']}, parsed={g['parsed']}):\n{g['student']}\n", flush=True)
        self.eval_results.update(results)
        self.log_dict(results, sync_dist=False)

    def _sync(self, total: float, tokens: int):
        if self.trainer is not None and self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(torch.tensor([total, float(tokens)], device=self.device), reduce_op="sum")
            return float(t[0]), int(t[1])
        return total, tokens

    def configure_optimizers(self):
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])

    # ---- checkpoints: adapters only --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    # ---- export ------------------------------------------------------------------------------------------------
    def merged_model(self):
        """A copy of the LM with the LoRA adapters merged into its weights (a plain HF model)."""
        return copy.deepcopy(self.model).merge_and_unload()
