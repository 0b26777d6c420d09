"""rdrec.backbones.heads: logits only where a loss reads them give the model's own loss and gradient."""

from __future__ import annotations

import pytest
import torch

from rdrec.backbones.causal import tiny_llama
from rdrec.backbones.heads import IGNORE, causal_hidden, causal_logits, labelled_nll


def _batch(vocab: int, generator: torch.Generator):
    ids = torch.randint(3, vocab, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a padded row
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :5] = IGNORE  # a "prompt" that carries no loss
    return ids, mask, labels


def _tiny_gemma2():
    """A random two-layer Gemma-2: a model with a final logit soft-cap."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, final_logit_softcapping=3.0, attn_logit_softcapping=None,
                          query_pre_attn_scalar=8, sliding_window=8)
    return Gemma2ForCausalLM(config).eval()


def _lora_llama():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama().model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: give the adapters weight, so they change the function
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("build", [_lora_llama, _tiny_gemma2], ids=["llama+lora", "gemma2-softcap"])
def test_labelled_nll_is_the_models_own_loss_and_gradient(build):
    model = build()
    ids, mask, labels = _batch(model.config.vocab_size, torch.Generator().manual_seed(1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    expected = torch.autograd.grad(reference, trainable)
    loss, count = labelled_nll(model, labels, input_ids=ids, attention_mask=mask)
    got = torch.autograd.grad(loss, trainable)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    assert count == int((labels[:, 1:] != IGNORE).sum())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    # and the logits at any position are the model's (soft-cap included)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(causal_logits(model, causal_hidden(model, input_ids=ids, attention_mask=mask)), full,
                                   rtol=1e-5, atol=1e-5)
