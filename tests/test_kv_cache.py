"""The in-place KV cache gives the numbers of transformers' own DynamicCache: prefill, steps across buffer growth,
rows leaving the batch, a prefix repeated for several rows, copies that stay independent, crop."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from rdrec.backbones.kv_cache import GrowingLayer, growing_cache

pytestmark = pytest.mark.skipif(GrowingLayer is None, reason="transformers without per-layer caches")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def _decode(model, cache, prefix_ids: torch.Tensor, rows: int, steps: int, drop_at: int):
    """Prefill a shared prefix, repeat it for ``rows`` rows, add per-row suffixes, decode greedily; rows 1 and 3
    leave at ``drop_at``. Returns every step's logits."""
    torch.manual_seed(1)
    suffix = torch.randint(0, 50, (rows, 5))
    with torch.inference_mode():
        model(input_ids=prefix_ids, past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(rows)
        plen = prefix_ids.shape[1]
        pos = torch.arange(plen, plen + 5).expand(rows, 5)
        logits = model(input_ids=suffix, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]
        out, last = [logits], pos[:, -1:]
        for step in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            if step == drop_at:
                keep = torch.tensor([i for i in range(nxt.shape[0]) if i not in (1, 3)])
                cache.batch_select_indices(keep)
                nxt, last = nxt[keep], last[keep]
            last = last + 1
            logits = model(input_ids=nxt, position_ids=last, past_key_values=cache, use_cache=True).logits[:, -1]
            out.append(logits)
    return out


def test_growing_cache_equals_dynamic_cache(model):
    prefix = torch.randint(0, 50, (1, 7))
    want = _decode(model, DynamicCache(config=model.config), prefix, rows=5, steps=12, drop_at=4)
    cache = growing_cache(model.config, chunk=3)  # small chunks: the buffer grows several times
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    got = _decode(model, cache, prefix, rows=5, steps=12, drop_at=4)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == 7 + 5 + 12 and cache.layers[0].keys.shape[0] == 3


def test_a_copied_cache_is_independent_and_crop_shortens_it(model):
    cache = growing_cache(model.config, chunk=4)
    with torch.inference_mode():
        model(input_ids=torch.randint(0, 50, (2, 6)), past_key_values=cache, use_cache=True)
        twin = copy.deepcopy(cache)
        model(input_ids=torch.randint(0, 50, (2, 3)), past_key_values=cache, use_cache=True)
    assert twin.get_seq_length() == 6 and cache.get_seq_length() == 9
    assert twin.layers[0].keys.shape[2] == 6
    cache.crop(-2)
    assert cache.get_seq_length() == 7 and cache.layers[1].values.shape[2] == 7
