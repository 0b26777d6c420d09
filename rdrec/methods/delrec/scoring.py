"""DELRec's language-model interface: prompts with a soft-prompt slot, the LM loss, exact candidate scoring.

- :class:`PromptCodec` turns text prompts holding one ``SOFT_SLOT`` marker into token ids with ``num_soft``
  placeholder positions (``soft_mask``) for :class:`rdrec.methods.delrec.soft_prompt.SoftPromptLM`, and item titles
  into target token ids that end with the end-of-sequence token (so a title that is a prefix of another is
  still a different, complete answer).
- :func:`lm_loss` is the token cross-entropy of the target titles given the prompts (teacher forcing), with the
  vocabulary projection only at the positions that carry a label.
- :func:`candidate_log_likelihood` scores each shown candidate by the log-likelihood of its *whole* title
  (every token, summed; or averaged with ``reduction="mean"``), batched: a decoder-only model reads the prompt
  and all C titles in one packed pass (the titles attend to the prompt and to themselves, not to each other), so
  the prompt is encoded once and no key/value cache is copied per candidate; an encoder-decoder model encodes
  the prompt once and decodes the C titles together. The public DELRec code scored only a title's first sub-word, which
  cannot tell "Star Wars" from "Star Trek".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rdrec.backbones.heads import IGNORE, labelled_nll
from rdrec.methods.delrec.soft_prompt import SoftPromptLM

SOFT_SLOT = "<soft_prompt>"


class PromptCodec:
    def __init__(self, tokenizer, kind: str, num_soft: int):
        if kind not in ("causal", "seq2seq"):
            raise ValueError(f"kind: expected 'causal' or 'seq2seq', got {kind!r}")
        self.tokenizer, self.kind, self.num_soft = tokenizer, kind, int(num_soft)
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos_token: titles could not be terminated")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.prefix, self.suffix = _special_affixes(tokenizer)
        if kind == "seq2seq" and not self.suffix:
            self.suffix = [self.eos_id]  # T5's encoder input ends with </s>

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # ---- prompts --------------------------------------------------------------------------------------------
    def prompt_ids(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids of one prompt and its soft mask (1 at the ``num_soft`` slot positions)."""
        parts = text.split(SOFT_SLOT)
        if len(parts) != 2:
            raise ValueError(f"a prompt must contain the soft-prompt slot {SOFT_SLOT!r} exactly once: {text[:200]!r}")
        before, after = self.prefix + self._ids(parts[0]), self._ids(parts[1]) + self.suffix
        ids = before + [self.pad_id] * self.num_soft + after
        mask = [0] * len(before) + [1] * self.num_soft + [0] * len(after)
        return ids, mask

    def encode_prompts(self, texts: Sequence[str], side: str = "right") -> dict[str, torch.Tensor]:
        rows = [self.prompt_ids(t) for t in texts]
        ids, attention, soft = _pad([r[0] for r in rows], self.pad_id, side), _pad([[1] * len(r[0]) for r in rows], 0, side), _pad([r[1] for r in rows], 0, side)
        return {"input_ids": ids, "attention_mask": attention, "soft_mask": soft}

    # ---- targets --------------------------------------------------------------------------------------------
    def target_ids(self, title: str) -> list[int]:
        """The answer's tokens: the title (after a space for a decoder-only model, which continues the prompt)
        and the end-of-sequence token."""
        return self._ids((" " + title) if self.kind == "causal" else title) + [self.eos_id]

    def title_table(self, titles: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [N, T], mask [N, T])`` of every title's target ids, right-padded."""
        rows = [self.target_ids(t) for t in titles]
        return _pad(rows, self.pad_id, "right"), _pad([[1] * len(r) for r in rows], 0, "right")

    def training_inputs(self, texts: Sequence[str], targets: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Model kwargs (for ``SoftPromptLM.forward``) with ``labels`` on the target tokens only."""
        prompts = [self.prompt_ids(t) for t in texts]
        if self.kind == "seq2seq":
            batch = self.encode_prompts(texts, "right")
            batch["labels"] = _pad([list(t) for t in targets], IGNORE, "right")
            return batch
        ids = [p[0] + list(t) for p, t in zip(prompts, targets)]
        soft = [p[1] + [0] * len(t) for p, t in zip(prompts, targets)]
        labels = [[IGNORE] * len(p[0]) + list(t) for p, t in zip(prompts, targets)]
        return {
            "input_ids": _pad(ids, self.pad_id, "right"),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0, "right"),
            "soft_mask": _pad(soft, 0, "right"),
            "labels": _pad(labels, IGNORE, "right"),
        }


def lm_loss(lm: SoftPromptLM, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy of the labelled tokens: the value of the model's own loss (``lm(**inputs).loss``),
    AdaLoRA's orthogonality regulariser included. For a decoder-only model the vocabulary projection runs only at
    the positions that predict a label (about 10 of ~450 per prompt), not at every position."""
    if lm.kind == "seq2seq":  # the decoder reads the targets only: its logits are already the labelled ones
        return lm(**inputs).loss
    embeds = lm.embed(inputs["input_ids"], inputs.get("soft_mask"))
    loss, _ = labelled_nll(lm.model, inputs["labels"], inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                           use_cache=False)
    return loss + adalora_penalty(lm.model)


def adalora_penalty(model: torch.nn.Module) -> torch.Tensor | float:
    """AdaLoRA's orthogonality regulariser as peft adds it to a model's loss (``AdaLoraModel.forward``):
    ``orth_reg_weight`` × mean over the adapted matrices of ‖PPᵀ − I‖_F (P = lora_A, or lora_Bᵀ); 0 without AdaLoRA."""
    inner = getattr(model, "base_model", None)
    name = getattr(inner, "trainable_adapter_name", None)
    configs = getattr(model, "peft_config", None)
    if name is None or not configs or not hasattr(configs[name], "orth_reg_weight"):
        return 0.0
    total, count = 0.0, 0
    for key, p in inner.model.named_parameters():
        if ("lora_A" in key or "lora_B" in key) and name in key:
            cov = p @ p.T if "lora_A" in key else p.T @ p
            total = total + torch.norm(cov - torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device), p="fro")
            count += 1
    return configs[name].orth_reg_weight * total / count if count else 0.0


def candidate_log_likelihood(
    lm: SoftPromptLM,
    prompts: dict[str, torch.Tensor],
    candidate_ids: torch.Tensor,
    candidate_mask: torch.Tensor,
    reduction: str = "sum",
) -> torch.Tensor:
    """log p(title_c | prompt_b) for every shown candidate: prompts [B, L] (left-padded for a decoder-only
    model), candidate title ids/mask [B, C, T] (right-padded) → [B, C]."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    B, C, T = candidate_ids.shape
    flat_ids, flat_mask = candidate_ids.reshape(B * C, T), candidate_mask.reshape(B * C, T)
    if lm.kind == "seq2seq":
        token_logp = _seq2seq_token_logp(lm, prompts, flat_ids, flat_mask, C)
    else:
        token_logp = _causal_token_logp(lm, prompts, flat_ids, flat_mask, C)
    token_logp = token_logp * flat_mask
    total = token_logp.sum(1)
    if reduction == "mean":
        total = total / flat_mask.sum(1).clamp(min=1)
    return total.reshape(B, C)


def _seq2seq_token_logp(lm, prompts, ids, mask, C) -> torch.Tensor:
    encoded = lm.encoder(prompts["input_ids"], prompts["attention_mask"], prompts.get("soft_mask"))
    hidden = encoded.last_hidden_state.repeat_interleave(C, dim=0)
    attention = prompts["attention_mask"].repeat_interleave(C, dim=0)
    labels = ids.masked_fill(mask == 0, IGNORE)
    logits = lm.model(encoder_outputs=(hidden,), attention_mask=attention, labels=labels).logits  # [BC, T, V]
    return torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _causal_token_logp(lm, prompts, ids, mask, C) -> torch.Tensor:
    """One packed pass per prompt: the prompt's columns, then C blocks holding each candidate's title tokens but the
    last, under an attention mask that lets a block see the prompt and its own earlier tokens only (and position ids
    that continue each prompt's). The prompt is encoded once and nothing is copied per candidate; the vocabulary
    projection runs at the prompt's last column and at the title tokens that are followed by a real one."""
    attention = prompts["attention_mask"]
    if (attention[:, -1] == 0).any():
        raise ValueError("decoder-only prompts must be left-padded (the last column is every prompt's last token)")
    B, L = attention.shape
    T = ids.shape[1]
    steps = T - 1
    ids3, mask3 = ids.reshape(B, C, T), mask.reshape(B, C, T)
    device = ids.device
    valid = attention.bool()
    input_ids = torch.cat([prompts["input_ids"], ids3[:, :, :steps].reshape(B, C * steps)], 1)
    soft = prompts.get("soft_mask")
    if soft is not None:
        soft = torch.cat([soft, soft.new_zeros(B, C * steps)], 1)
    lengths = attention.sum(1)
    positions = torch.cat([(attention.cumsum(1) - 1).clamp(min=0),
                           (lengths[:, None, None] + torch.arange(steps, device=device)).expand(B, C, steps).reshape(B, C * steps)], 1)
    S = L + C * steps
    allowed = torch.zeros(B, S, S, dtype=torch.bool, device=device)
    allowed[:, :L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool, device=device)) & valid[:, None, :]
    allowed[:, L:, :L] = valid[:, None, :]
    allowed[:, L:, L:] = torch.block_diag(*[torch.tril(torch.ones(steps, steps, dtype=torch.bool, device=device))] * C)
    allowed |= torch.eye(S, dtype=torch.bool, device=device)  # a padding column sees itself: no empty row
    dtype = lm.soft_prompt.dtype
    bias = torch.zeros(B, 1, S, S, dtype=dtype, device=device).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
    hidden = lm.hidden_states(input_ids, soft, attention_mask=bias, position_ids=positions, use_cache=False)
    out = torch.zeros(B, C, T, device=device)
    first = torch.log_softmax(lm.logits(hidden[:, L - 1]).float(), -1)  # [B, V]: every title's first token
    out[:, :, 0] = first.gather(1, ids3[:, :, 0])
    if steps:
        keep = mask3[:, :, 1:].bool()  # block column j predicts title token j + 1
        rows = hidden[:, L:].reshape(B, C, steps, -1)[keep]
        logp = torch.log_softmax(lm.logits(rows).float(), -1)
        out[:, :, 1:][keep] = logp.gather(1, ids3[:, :, 1:][keep].unsqueeze(1)).squeeze(1)
    return out.reshape(B * C, T)


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. BOS; T5's </s>)."""
    probe = "hello"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


def _pad(rows: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        if side == "right":
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        else:
            out[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
    return out
