"""DELRec's soft-prompt wrapper and exact candidate scorer on tiny random LMs (decoder-only and T5)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from rdrec.backbones import Backbone
from rdrec.methods.delrec.scoring import SOFT_SLOT, PromptCodec, candidate_log_likelihood
from rdrec.methods.delrec.soft_prompt import SoftPromptLM

WORDS = (
    "a user consumed these items oldest first the recommendation pattern of sasrec is candidates next item "
    "star wars trek toy story alien aliens heat fargo casablanca ; . : ( ) 1977 1979 1995 one more then just before "
    "consumed recommends user's"
).split()
KINDS = ("causal", "seq2seq")


def tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS: "Star Wars" and "Star Trek" share their first token."""
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    if kind == "causal":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def tiny_backbone(kind: str, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(kind)
    vocab = len(tokenizer)
    if kind == "causal":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    else:
        config = T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                          pad_token_id=0, eos_token_id=3, decoder_start_token_id=0, dropout_rate=0.0)
        model = T5ForConditionalGeneration(config)
    return Backbone(model=model.eval(), tokenizer=tokenizer, kind=kind, name=f"tiny-{kind}")


def naive_log_likelihood(lm: SoftPromptLM, codec: PromptCodec, prompt: str, title: str) -> float:
    """One full forward pass over prompt + whole title: the reference the batched scorer must equal."""
    batch = codec.training_inputs([prompt], [codec.target_ids(title)])
    with torch.no_grad():
        out = lm(**batch)
    labels = batch["labels"]
    if lm.kind == "causal":
        logits, labels = out.logits[:, :-1], labels[:, 1:]
    else:
        logits = out.logits
    logp = torch.log_softmax(logits.float(), -1)
    keep = labels != -100
    return float(logp[keep].gather(-1, labels[keep].unsqueeze(-1)).sum())


PROMPT = f"a user consumed these items : toy story ; heat . the recommendation pattern of sasrec is {SOFT_SLOT} . candidates : star wars ; star trek ; alien . next item :"
TITLES = ["star wars", "star trek", "alien", "aliens", "fargo"]


def _score(lm, codec, prompts, titles):
    side = "left" if lm.kind == "causal" else "right"
    enc = codec.encode_prompts(prompts, side)
    ids, mask = codec.title_table(titles)
    B = len(prompts)
    with torch.no_grad():
        return candidate_log_likelihood(lm, enc, ids.unsqueeze(0).expand(B, -1, -1), mask.unsqueeze(0).expand(B, -1, -1))


@pytest.mark.parametrize("kind", KINDS)
def test_soft_prompt_goes_into_marked_positions(kind):
    bb = tiny_backbone(kind)
    lm = SoftPromptLM(bb.model, kind, num_tokens=5)
    codec = PromptCodec(bb.tokenizer, kind, 5)
    enc = codec.encode_prompts([PROMPT, "star wars " + SOFT_SLOT], "left")
    embeds = lm.embed(enc["input_ids"], enc["soft_mask"])
    for row in range(2):
        at = enc["soft_mask"][row].bool()
        assert torch.equal(embeds[row, at], lm.soft_prompt.detach())  # the N vectors, in order
        plain = bb.model.get_input_embeddings()(enc["input_ids"][row, ~at])
        assert torch.equal(embeds[row, ~at], plain)
    with pytest.raises(ValueError, match="exactly 5"):
        lm.embed(enc["input_ids"], torch.zeros_like(enc["soft_mask"]))
    with pytest.raises(ValueError, match="soft-prompt slot"):
        codec.prompt_ids("no slot here")


@pytest.mark.parametrize("kind", KINDS)
def test_batched_scores_equal_full_sequence_log_likelihood(kind):
    bb = tiny_backbone(kind)
    lm = SoftPromptLM(bb.model, kind, num_tokens=4).eval()
    codec = PromptCodec(bb.tokenizer, kind, 4)
    prompts = [PROMPT, f"heat . {SOFT_SLOT} next item :"]  # different lengths: padding must not matter
    scores = _score(lm, codec, prompts, TITLES)
    assert scores.shape == (2, len(TITLES))
    for b, prompt in enumerate(prompts):
        for c, title in enumerate(TITLES):
            assert scores[b, c].item() == pytest.approx(naive_log_likelihood(lm, codec, prompt, title), abs=1e-4)
    # the title's every token counts: a two-word title is not scored by its first word
    first_word = _score(lm, codec, prompts, ["star"])
    assert not torch.allclose(scores[:, 0], first_word[:, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_memorised_answer_ranks_first_even_when_first_subword_is_shared(kind):
    bb = tiny_backbone(kind, seed=1)
    lm = SoftPromptLM(bb.model, kind, num_tokens=3)
    codec = PromptCodec(bb.tokenizer, kind, 3)
    batch = codec.training_inputs([PROMPT], [codec.target_ids("star trek")])
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    lm.train()
    for _ in range(60):
        opt.zero_grad()
        lm(**batch).loss.backward()
        opt.step()
    lm.eval()
    # "star wars" and "star trek" share the first token: a first-sub-word scorer cannot separate them
    ids, _ = codec.title_table(["star wars", "star trek"])
    assert ids[0, 0] == ids[1, 0] and ids[0, 1] != ids[1, 1]
    scores = _score(lm, codec, [PROMPT], TITLES)[0]
    assert int(scores.argmax()) == TITLES.index("star trek")
    assert scores[TITLES.index("star trek")] > scores[TITLES.index("star wars")] + 1.0
    # different words, and a title that is another's prefix ("star" vs "star wars") differs by its end token
    assert scores[TITLES.index("alien")] != scores[TITLES.index("aliens")]


def test_title_targets_end_with_eos_so_prefix_titles_differ():
    for kind in KINDS:
        codec = PromptCodec(tiny_tokenizer(kind), kind, 2)
        a, b = codec.target_ids("star"), codec.target_ids("star wars")
        assert a[-1] == b[-1] == codec.eos_id and a[:-1] == b[:1] and a != b[: len(a)]


@pytest.mark.teacher_model
def test_shipped_smollm2_scores_whole_titles_exactly():
    """On the real SmolLM2 (grouped-query attention, BPE): the packed batched scores equal one full forward pass
    per candidate, and two titles that share their first sub-word get different scores."""
    from tests.test_teacher_fixtures import real_smollm2_dir

    path = real_smollm2_dir()
    if path is None:
        pytest.skip("the converted SmolLM2 copy is absent (rdrec-generate data=ml100k fetches and converts it once)")
    from rdrec.backbones.causal import pretrained

    bb = pretrained(str(path))
    lm = SoftPromptLM(bb.model, "causal", num_tokens=3).eval()
    codec = PromptCodec(bb.tokenizer, "causal", 3)
    titles = ["Star Wars (1977)", "Star Trek: First Contact (1996)", "Fargo (1996)"]
    first = [codec.target_ids(t)[0] for t in titles[:2]]
    assert first[0] == first[1]  # " Star" is one shared sub-word
    prompts = [f"A user watched Alien (1979); Heat (1995). Pattern: {SOFT_SLOT}. Next movie:", f"{SOFT_SLOT} Next:"]
    scores = _score(lm, codec, prompts, titles)
    for b, prompt in enumerate(prompts):
        for c, title in enumerate(titles):
            assert scores[b, c].item() == pytest.approx(naive_log_likelihood(lm, codec, prompt, title), abs=2e-3)
    assert abs(scores[0, 0] - scores[0, 1]) > 1e-3
