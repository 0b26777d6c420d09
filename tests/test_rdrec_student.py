"""The RDRec/POD student: tokenizer, whole-word indices, soft prompts, constrained decoding, candidate scoring."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from rdrec.backbones import Backbone
from rdrec.backbones.t5 import load_t5, tiny_t5
from rdrec.backbones.tokenizer import corpus_tokenizer, train_tokenizer
from rdrec.methods.rdrec.tasks import TASK_IDS, TASKS, TextEncoder, TextExample, item_text
from rdrec.methods.rdrec.trie import ItemTrie
from rdrec.eval.protocols import CandidateRanking, FullRanking
from rdrec.methods.rdrec.text_metrics import text_scores
from rdrec.methods.rdrec.pod import PODStudent
from rdrec.methods.rdrec.module import RDRecStudentModule

NUM_ITEMS = 120  # ids 1..120: "item_1" is a prefix of "item_12" and "item_120", so the trie must branch after "1"
CORPUS = [f"user_{u} has interacted with item_{u} item_{u + 1} ; predict the next item" for u in range(1, 40)] + [
    "pick an item for user_3 from item_4 item_5", "what does user_7 prefer ?", "The user prefers comedies.",
    "what are the attributes of item_9 ?", "The item's attributes are funny and light.",
    "explain why user_2 interacted with item_8",
] + [item_text(i) for i in range(1, NUM_ITEMS + 1)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return TextEncoder(tokenizer, max_source_length=256, max_target_length=32)


def _student(tokenizer, prompt_length=3, seed=0) -> PODStudent:
    torch.manual_seed(seed)
    return PODStudent(tiny_t5(tokenizer, seed=seed).model, num_tasks=len(TASKS), prompt_length=prompt_length)


# ---- tokenizer --------------------------------------------------------------------------------------------------
def test_tokenizer_is_deterministic_cached_and_spells_ids_digit_by_digit(tokenizer, tmp_path):
    again = train_tokenizer(list(reversed(CORPUS)), vocab_size=300)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    cached = corpus_tokenizer(CORPUS, tmp_path, vocab_size=300)
    files = list((tmp_path / "tokenizers").glob("*/tokenizer.json"))
    assert len(files) == 1 and corpus_tokenizer(CORPUS, tmp_path, vocab_size=300).get_vocab() == cached.get_vocab()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)  # T5's layout
    alone = tokenizer.convert_ids_to_tokens(tokenizer("item_345", add_special_tokens=False)["input_ids"])
    assert alone == ["▁item", "_", "3", "4", "5"]
    in_context = tokenizer.convert_ids_to_tokens(tokenizer("with item_345, item_7")["input_ids"])
    assert in_context[1:6] == alone and in_context[-1] == "</s>"
    assert tokenizer.decode(tokenizer("user_12 has item_345 .")["input_ids"], skip_special_tokens=True) == "user_12 has item_345 ."


# ---- whole-word indices -----------------------------------------------------------------------------------------
def test_whole_word_ids_match_id_mentions(encoder, tokenizer):
    text = "user_12 has interacted with item_345 item_7 ; predict"
    batch = encoder.encode_sources([text, "item_9"], ["sequential", "attribute"])
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    words = batch["whole_word_ids"][0].tolist()
    by_word: dict[int, str] = {}
    for tok, w in zip(tokens, words):
        if tok != "<pad>":
            by_word[w] = by_word.get(w, "") + tok
    assert by_word[1] == "▁user_12" and by_word[5] == "▁item_345" and by_word[6] == "▁item_7"
    assert by_word[2] == "▁has" and by_word[7] == "▁;" and by_word[8].replace("▁", "") == "predict"
    assert by_word[0] == "</s>"  # end-of-sequence is no word
    # every sub-token of one mention carries the mention's index, neighbours differ
    assert words[:4] == [1, 1, 1, 1] and tokens[:4] == ["▁user", "_", "1", "2"]
    assert batch["whole_word_ids"][1].tolist()[:5] == [1, 1, 1, 0, 0]  # "▁item _ 9 </s> <pad>"
    assert batch["attention_mask"][1].tolist()[:5] == [1, 1, 1, 1, 0]
    assert batch["task"].tolist() == [TASK_IDS["sequential"], TASK_IDS["attribute"]]


def test_targets_are_padded_with_minus_100_and_padding_does_not_change_the_loss(encoder, tokenizer):
    student = _student(tokenizer)
    examples = [TextExample("preference", "what does user_7 prefer ?", "The user prefers comedies."),
                TextExample("sequential", "user_3 has interacted with item_4 ; predict the next item", "item_5")]
    batch = encoder(examples)
    assert (batch["labels"][1, 4:] == -100).all() and (batch["labels"][0] != -100).all()
    loss = student(**batch)
    wider = dict(batch, labels=torch.cat([batch["labels"], torch.full((2, 3), -100)], dim=1))
    assert torch.allclose(student(**wider), loss)
    # the loss is the mean over real target tokens only
    logits = student.t5(encoder_outputs=student.encode(batch["input_ids"], batch["attention_mask"],
                                                       batch["whole_word_ids"], batch["task"])[0],
                        attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), batch["attention_mask"]], 1),
                        labels=batch["labels"]).logits
    keep = batch["labels"] != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep])
    assert torch.allclose(manual, loss, atol=1e-6)


# ---- soft prompts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tasks", [["sequential", "sequential", "attribute"], ["preference"], list(TASKS)])
def test_soft_prompts_get_gradient_only_from_their_own_tasks_rows(encoder, tokenizer, tasks):
    student = _student(tokenizer)
    sources = {"sequential": "user_3 has interacted with item_4 ; predict the next item",
               "topn": "pick an item for user_3 from item_4 item_5", "explanation": "explain why user_2 interacted with item_8",
               "preference": "what does user_7 prefer ?", "attribute": "what are the attributes of item_9 ?"}
    batch = encoder([TextExample(t, sources[t], "item_5") for t in tasks])
    student(**batch).backward()
    grad = student.prompts.grad
    for name, tid in TASK_IDS.items():
        if name in tasks:
            assert grad[tid].abs().sum() > 0, name
        else:
            assert torch.equal(grad[tid], torch.zeros_like(grad[tid])), name
    # and a row's prompt gradient is what that row alone gives (other tasks' rows contribute nothing to it)
    if tasks == ["sequential", "sequential", "attribute"]:
        alone = _student(tokenizer)
        rows = {k: v[:2] for k, v in batch.items()}
        (alone(**rows) * (rows["labels"] != -100).sum() / (batch["labels"] != -100).sum()).backward()
        assert torch.allclose(alone.prompts.grad[TASK_IDS["sequential"]], grad[TASK_IDS["sequential"]], atol=1e-6)


def test_task_ids_must_be_one_per_row_and_in_range(encoder, tokenizer):
    student = _student(tokenizer)
    batch = encoder([TextExample("sequential", "user_3 has interacted with item_4", "item_5")])
    with pytest.raises(ValueError, match="task ids must be in"):
        student(**dict(batch, task=torch.tensor([len(TASKS)])))
    with pytest.raises(ValueError, match="one task per row"):
        student(**dict(batch, task=torch.tensor([0, 1])))


# ---- constrained decoding ---------------------------------------------------------------------------------------
def test_trie_allows_exactly_the_item_continuations(encoder, tokenizer):
    tokens = encoder.item_tokens(NUM_ITEMS)
    trie = ItemTrie(tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
    one = tokens[1]  # ▁item _ 1
    allowed = set(tokenizer.convert_ids_to_tokens(trie.allowed(one)))
    assert allowed == {"</s>", *"0123456789"}  # item_1 may end or go on to item_10..item_19, item_100..item_120
    assert set(tokenizer.convert_ids_to_tokens(trie.allowed(tokens[12]))) == {"</s>", "0"}  # item_12 / item_120
    assert trie.allowed(tokens[99]) == [tokenizer.eos_token_id]
    assert trie.allowed([*tokens[7], tokenizer.eos_token_id]) == [tokenizer.pad_token_id]
    assert trie.lookup([0, *tokens[57], tokenizer.eos_token_id, 0]) == 57
    assert trie.lookup([0, *tokens[5]]) is None  # unfinished
    with pytest.raises(ValueError, match="tokenize identically"):
        ItemTrie({1: [5, 6], 2: [5, 6]}, 1, 0)


def test_constrained_beam_search_only_emits_valid_item_ids(encoder, tokenizer):
    torch.manual_seed(0)
    tokens = encoder.item_tokens(NUM_ITEMS)
    trie = ItemTrie(tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
    for seed in range(3):  # untrained models of different seeds: free decoding would babble
        student = _student(tokenizer, seed=seed).eval()
        batch = encoder.encode_sources([f"user_{u} has interacted with item_{u} ; predict the next item" for u in range(1, 7)],
                                       ["sequential"] * 6)
        encoded, mask = student.encode(**batch)
        seqs, scores = student.beam_search(encoded, mask, num_beams=12, max_new_tokens=trie.max_length,
                                           prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn)
        items = [[trie.lookup(s) for s in row] for row in seqs.tolist()]
        assert all(i is not None and 1 <= i <= NUM_ITEMS for row in items for i in row)
        assert all(len(set(row)) == len(row) for row in items)  # beams are distinct items
        # beam scores are the summed log-likelihoods the candidate scorer computes
        labels = torch.full((6, trie.max_length), -100)
        for r in range(6):
            labels[r, : len(tokens[items[r][0]]) + 1] = torch.tensor([*tokens[items[r][0]], tokenizer.eos_token_id])
        exact = student.sequence_log_likelihood(encoded, mask, labels)
        assert torch.allclose(exact, scores[:, 0], atol=1e-4)
        full = trie.scores_from_beams(seqs, scores, NUM_ITEMS)
        assert full.shape == (6, NUM_ITEMS + 1) and torch.isinf(full[:, 0]).all()
        assert (torch.isfinite(full).sum(1) == 12).all()


def test_cached_cross_attention_scoring_equals_plain_teacher_forcing(encoder, tokenizer):
    student = _student(tokenizer).eval()
    batch = encoder.encode_sources(["user_1 has interacted with item_2", "user_5 has interacted with item_33 item_4"],
                                   ["sequential", "topn"])
    encoded, mask = student.encode(**batch)
    targets = encoder.encode_targets(["item_2", "item_33", "item_3", "item_120", "item_2"])
    rows = torch.tensor([0, 0, 1, 1, 1])
    with torch.no_grad():
        fast = student.sequence_log_likelihood(encoded, mask, targets, rows, chunk=2)
        out = student.t5(encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state[rows]),
                         attention_mask=mask[rows], labels=targets)
    logp = out.logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(fast, (logp * (targets != -100)).sum(-1), atol=1e-5)


# ---- the Lightning module's scorers after a tiny overfit run -----------------------------------------------------
def test_after_overfitting_the_scorers_rank_the_memorised_target_first(encoder, tokenizer):
    module = RDRecStudentModule(backbone=lambda tokenizer: tiny_t5(tokenizer, seed=1), num_items=NUM_ITEMS,
                                num_users=10, protocols={"full": FullRanking(exclude_seen=True),
                                                         "sampled": CandidateRanking("sampled")},
                                optimizer=lambda params: torch.optim.Adam(params, lr=1e-2), num_beams=10)
    module.build(tokenizer, encoder.item_tokens(NUM_ITEMS))
    memorised = {1: 57, 2: 101, 3: 12}  # user → next item
    sources = [f"user_{u} has interacted with item_{u + 20} ; predict the next item" for u in memorised]
    examples = [TextExample("sequential", s, item_text(i)) for s, i in zip(sources, memorised.values())]
    batch = encoder(examples)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = module.model(**batch)
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05
    module.eval()
    eval_batch = {k: v for k, v in batch.items() if k != "labels"}
    eval_batch["target"] = torch.tensor(list(memorised.values()))
    eval_batch["user"] = torch.tensor(list(memorised))
    eval_batch["seen"] = torch.tensor([[u + 20] for u in memorised])
    candidates = torch.tensor([[5, 57, 58, 12, 0], [101, 1, 10, 100, 11], [120, 13, 1, 12, 2]])
    eval_batch["sampled_candidates"], eval_batch["sampled_target_index"] = candidates, torch.tensor([1, 0, 3])
    with torch.no_grad():
        scores = module.score_candidates(eval_batch, candidates)
        assert scores.argmax(1).tolist() == [1, 0, 3]
        assert torch.isinf(scores[0, 4])  # padding candidate never competes
        full = module.score_all(eval_batch)
        assert full.argmax(1).tolist() == list(memorised.values())
        # through the shared protocols: everything at rank 1
        for name, protocol in module.protocols.items():
            s, target_index, valid = protocol(module, eval_batch)
            target_scores = s.gather(1, target_index[:, None])
            assert ((s.masked_fill(~valid, float("-inf")) >= target_scores).sum(1) == 1).all(), name


# ---- backbones --------------------------------------------------------------------------------------------------
def test_t5_loaders(tokenizer, tmp_path):
    bb = load_t5(tokenizer=tokenizer, config={"d_model": 16, "d_ff": 32, "d_kv": 4, "num_layers": 1,
                                              "num_decoder_layers": 1, "num_heads": 2}, seed=3)
    assert isinstance(bb, Backbone) and bb.kind == "seq2seq"
    assert bb.model.config.vocab_size == len(tokenizer) and bb.model.config.decoder_start_token_id == tokenizer.pad_token_id
    again = load_t5(tokenizer=tokenizer, config={"d_model": 16, "d_ff": 32, "d_kv": 4, "num_layers": 1,
                                                 "num_decoder_layers": 1, "num_heads": 2}, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(bb.model.parameters(), again.model.parameters()))
    # a saved model loads back as a "pretrained" one from its directory, with its tokenizer
    bb.model.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    loaded = load_t5(pretrained=str(tmp_path / "t5"))
    assert loaded.name == "t5" and len(loaded.tokenizer) == len(tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(bb.model.parameters(), loaded.model.parameters()))
    with pytest.raises(OSError, match="cannot load pretrained T5"):
        load_t5(pretrained=str(tmp_path / "missing"), local_files_only=True)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        load_t5()


# ---- text metrics -----------------------------------------------------------------------------------------------
def test_text_metrics_exact_values_and_full_length_references():
    perfect = text_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect == pytest.approx({"bleu4": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rouge_l": 100.0})
    # a prediction that is the reference's first half: recall halves, so the F1 scores fall (references are not
    # cut to the prediction's length)
    half = text_scores(["the cat sat"], ["the cat sat on the mat"])
    assert half["rouge1"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert half["rouge2"] == pytest.approx(100 * 2 * 1 * 0.4 / 1.4)
    assert half["bleu4"] == 0.0  # no 4-gram in a 3-word prediction
    with pytest.raises(ValueError, match="predictions for"):
        text_scores(["a"], ["a", "b"])


def _module(tokenizer, encoder, exclude_seen=True, num_beams=8, **kwargs) -> RDRecStudentModule:
    module = RDRecStudentModule(backbone=lambda tokenizer: tiny_t5(tokenizer, seed=1), num_items=NUM_ITEMS,
                                num_users=10, protocols={"full": FullRanking(exclude_seen=exclude_seen),
                                                         "sampled": CandidateRanking("sampled")},
                                optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3), num_beams=num_beams,
                                **kwargs)
    module.build(tokenizer, encoder.item_tokens(NUM_ITEMS))
    return module.eval()


def test_seen_items_are_banned_inside_the_beam_search_so_every_user_gets_num_beams_unseen_items(encoder, tokenizer):
    module = _module(tokenizer, encoder)
    assert module.ban_seen
    users = range(1, 7)
    batch = encoder.encode_sources([f"user_{u} has interacted with item_{u} ; predict the next item" for u in users],
                                   ["sequential"] * 6)
    free = module.score_all(batch | {"seen": torch.zeros(6, 1, dtype=torch.long)})
    # ban each row's own top beams (and, for row 0, every item spelt with a leading 1: 1, 10-19, 100-120)
    seen = [torch.isfinite(free[r]).nonzero().flatten()[:5].tolist() for r in range(6)]
    seen[0] = sorted(set(seen[0]) | {i for i in range(1, NUM_ITEMS + 1) if str(i).startswith("1")})
    width = max(len(s) for s in seen)
    padded = torch.tensor([s + [0] * (width - len(s)) for s in seen])
    scores = module.score_all(batch | {"seen": padded})
    for r in range(6):
        reached = torch.isfinite(scores[r]).nonzero().flatten().tolist()
        assert len(reached) == module.num_beams  # the full number of distinct items for every user
        assert not set(reached) & set(seen[r])  # none of them seen
    # with a full-ranking protocol that keeps seen items, nothing is banned
    assert not _module(tokenizer, encoder, exclude_seen=False).ban_seen


def test_parameter_groups_get_their_learning_rate_multipliers_and_report_their_relative_change(encoder, tokenizer):
    module = _module(tokenizer, encoder, lr_multipliers={"soft_prompt": 30, "embedding": 10})
    optimizer = module.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["initial_lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx({"soft_prompt": 3e-2, "whole_word": 1e-3, "embedding": 1e-2, "rest": 1e-3})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in module.parameters()}) == len({id(p) for p in params})
    module.on_fit_start()  # the start (configure_model takes it, before a resumed fit loads its checkpoint)
    with torch.no_grad():
        module.model.prompts.mul_(1.5)  # moves by half its norm
    module.on_fit_start()  # as in a resumed fit: the weights are the checkpoint's by now; the start stays
    module.on_fit_end()
    assert module.eval_results["train/rel_change/soft_prompt"] == pytest.approx(0.5, rel=1e-5)
    assert module.eval_results["train/rel_change/rest"] == 0.0
    with pytest.raises(ValueError, match="unknown group"):
        _module(tokenizer, encoder, lr_multipliers={"prompts": 2})
