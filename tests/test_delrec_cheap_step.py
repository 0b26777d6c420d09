"""The cheaper DELRec step equals the old one: the loss with logits only at labelled positions equals the model's own
loss over full logits (AdaLoRA's regulariser included), and the packed candidate scorer equals the old scorer that
copied the prompt's key/value cache per candidate (and both equal one full pass per prompt + title)."""

from __future__ import annotations

import pytest
import torch

from rdrec.methods.delrec.scoring import IGNORE, SOFT_SLOT, PromptCodec, adalora_penalty, candidate_log_likelihood, lm_loss
from rdrec.methods.delrec.soft_prompt import SoftPromptLM
from tests.test_delrec_models import PROMPT, TITLES, naive_log_likelihood, tiny_backbone

PROMPTS = [PROMPT, f"heat . {SOFT_SLOT} next item :", f"toy story ; fargo ; alien . {SOFT_SLOT} candidates : heat :"]


def _old_causal_scores(lm, prompts, ids, mask):
    """The scorer before the packed pass: prompt logits everywhere, the KV cache repeated C times."""
    B, C, T = ids.shape
    ids, mask = ids.reshape(B * C, T), mask.reshape(B * C, T)
    attention = prompts["attention_mask"]
    lengths = attention.sum(1)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    out = lm(prompts["input_ids"], soft_mask=prompts["soft_mask"], attention_mask=attention, position_ids=positions,
             use_cache=True)
    first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(C, dim=0)
    logp = [first.gather(1, ids[:, :1])]
    cache = out.past_key_values
    cache.batch_repeat_interleave(C)
    step_mask = torch.cat([attention.repeat_interleave(C, dim=0), mask[:, :-1]], dim=1)
    step_pos = lengths.repeat_interleave(C).unsqueeze(1) + torch.arange(T - 1)
    nxt = lm.model(input_ids=ids[:, :-1], attention_mask=step_mask, position_ids=step_pos, past_key_values=cache,
                   use_cache=True).logits
    logp.append(torch.log_softmax(nxt.float(), -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1))
    return (torch.cat(logp, 1) * mask).sum(1).reshape(B, C)


def _causal(seed=0, adalora=False):
    bb = tiny_backbone("causal", seed=seed)
    model = bb.model
    if adalora:
        from peft import AdaLoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, AdaLoraConfig(task_type=TaskType.CAUSAL_LM, init_r=4, target_r=2, total_step=10,
                                                     orth_reg_weight=0.5))
        with torch.no_grad():  # non-zero singular values, so the adapters change the output
            for name, p in model.named_parameters():
                if "lora_E" in name:
                    p.normal_(0, 0.5)
    return SoftPromptLM(model, "causal", num_tokens=4).eval(), PromptCodec(bb.tokenizer, "causal", 4)


@pytest.mark.parametrize("adalora", [False, True])
def test_loss_at_labelled_positions_equals_the_models_loss(adalora):
    lm, codec = _causal(adalora=adalora)
    titles = ["star wars", "alien", "toy story"]
    inputs = codec.training_inputs(PROMPTS, [codec.target_ids(t) for t in titles])
    assert (inputs["labels"] != IGNORE).sum() == sum(len(codec.target_ids(t)) for t in titles)
    full = lm(**inputs).loss  # full-vocabulary logits at every position (peft adds its regulariser)
    cheap = lm_loss(lm, inputs)
    assert cheap.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    penalty = adalora_penalty(lm.model)
    assert (float(penalty) > 0) == adalora  # the regulariser is really in both
    # and its gradient: the soft prompt's gradient is the same
    g_full = torch.autograd.grad(full, lm.soft_prompt)[0]
    g_cheap = torch.autograd.grad(lm_loss(lm, inputs), lm.soft_prompt)[0]
    assert torch.allclose(g_cheap, g_full, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("adalora", [False, True])
def test_packed_scores_equal_the_cache_copying_scorer_and_full_passes(adalora):
    lm, codec = _causal(seed=2, adalora=adalora)
    enc = codec.encode_prompts(PROMPTS, "left")
    ids, mask = codec.title_table(TITLES)
    B = len(PROMPTS)
    # each prompt its own candidates, in its own order (different title lengths in one batch)
    order = torch.tensor([[0, 1, 2, 3, 4], [4, 2, 0, 1, 3], [3, 3, 1, 0, 2]])
    cand_ids, cand_mask = ids[order], mask[order]
    with torch.no_grad():
        new = candidate_log_likelihood(lm, enc, cand_ids, cand_mask)
        old = _old_causal_scores(lm, enc, cand_ids, cand_mask)
    assert new.shape == (B, 5)
    assert torch.allclose(new, old, atol=1e-4), (new - old).abs().max()
    for b in range(B):
        for c in range(5):
            ref = naive_log_likelihood(lm, codec, PROMPTS[b], TITLES[int(order[b, c])])
            assert new[b, c].item() == pytest.approx(ref, abs=1e-4)


def test_one_token_titles_need_no_candidate_block():
    lm, codec = _causal()
    enc = codec.encode_prompts(PROMPTS[:2], "left")
    ids = torch.tensor([[[5], [6]], [[7], [5]]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        new = candidate_log_likelihood(lm, enc, ids, mask)
        out = lm(enc["input_ids"], soft_mask=enc["soft_mask"], attention_mask=enc["attention_mask"],
                 position_ids=(enc["attention_mask"].cumsum(1) - 1).clamp(min=0))
    ref = torch.log_softmax(out.logits[:, -1], -1).gather(1, ids[:, :, 0])
    assert torch.allclose(new, ref, atol=1e-5)
