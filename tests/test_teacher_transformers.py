"""The batched transformers backend: same text as model.generate, seeded per row, the Lightning module."""

from __future__ import annotations

import pytest
import torch

from rdrec.teacher.backends.base import GenerationParams, join_opening
from rdrec.teacher.backends.transformers import TransformersBackend
from rdrec.teacher.prompts import Subset
from tests.test_teacher_fixtures import families, real_smollm2_dir, synthetic_prepared, teacher_model, tiny_lm  # noqa: F401


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    prepared = synthetic_prepared(tmp_path_factory.mktemp("t"), num_users=20)
    fams = families()
    items = [i for f in fams.values() for i in f.build(prepared.train_view(), Subset(users=4, interactions_per_user=1))]
    return [i.chat() for i in items]  # 4 RDRec then 4 SLIM prompts


@pytest.mark.parametrize("rows", ["mixed", "rdrec", "slim"])
def test_batched_greedy_equals_one_at_a_time_model_generate(tiny_lm, chats, rows):
    backend = TransformersBackend(str(tiny_lm))
    backend.setup()
    chats = {"mixed": chats, "rdrec": chats[:4], "slim": chats[4:]}[rows]
    params = GenerationParams(max_new_tokens=24, do_sample=False)
    batched = backend.generate(chats, list(range(len(chats))), params)
    # one family per batch: its system message and few-shot example are encoded once and shared by the rows
    assert len(backend._prefixes) == (0 if rows == "mixed" else 1)
    if rows != "mixed":  # a lone prompt (a retry) shares the same encoded prefix and gets the same answer
        assert backend.generate(chats[1:2], [1], params)[0].text == batched[1].text and len(backend._prefixes) == 1
    tok, model = backend.tokenizer, backend.model
    lengths = set()
    for chat, got in zip(chats, batched):
        assert chat[-1]["role"] == "assistant"  # the prompts end in the answer's opening (prefill)
        text = tok.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=False) + chat[-1]["content"]
        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        new = ref[0, enc["input_ids"].shape[1]:]
        assert got.text == join_opening(chat[-1]["content"], tok.decode(new, skip_special_tokens=True))
        assert got.prompt_tokens == enc["input_ids"].shape[1]
        lengths.add(got.completion_tokens)
    assert len({len(c[-2]["content"]) for c in chats}) > 1  # rows really had different lengths (left padding)


def test_sampling_is_seeded_per_row(tiny_lm, chats):
    backend = TransformersBackend(str(tiny_lm))
    params = GenerationParams(max_new_tokens=24, do_sample=True, temperature=1.0, top_p=0.95, repetition_penalty=1.2)
    seeds = [11, 22, 33, 44]
    a = [g.text for g in backend.generate(chats[:4], seeds, params)]
    b = [g.text for g in backend.generate(chats[:4], seeds, params)]
    assert a == b
    # the same rows in another order, with the same seeds: each row's text is its own
    c = [g.text for g in backend.generate(chats[:4][::-1], seeds[::-1], params)][::-1]
    assert a == c
    d = [g.text for g in backend.generate(chats[:4], [1, 2, 3, 4], params)]
    assert d != a


def test_prompt_longer_than_the_limit_is_a_clear_error(tiny_lm, chats):
    backend = TransformersBackend(str(tiny_lm), max_input_tokens=10)
    with pytest.raises(ValueError, match="max_input_tokens"):
        backend.generate(chats[:1], [0], GenerationParams(max_new_tokens=4))


@teacher_model
def test_shipped_smollm2_answers_a_chat():
    path = real_smollm2_dir()
    if path is None:
        pytest.skip("the converted SmolLM2 copy is absent (rdrec-generate data=ml100k fetches and converts it once)")
    backend = TransformersBackend(str(path))
    out = backend.generate([[{"role": "user", "content": "Name two genres of movies. Answer in one sentence."}]], [0],
                           GenerationParams(max_new_tokens=20, do_sample=False))
    assert out[0].finish_reason == "stop" and "comedy" in out[0].text.lower()
    assert not torch.is_grad_enabled() or all(not p.requires_grad for p in backend.model.parameters())
