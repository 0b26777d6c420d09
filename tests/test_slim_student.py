"""SLIM's student: prompt tokens never enter the loss; LoRA trains adapters only; the merged export is the same
function; the prompt format equals the generation backend's; the causal backbones load."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rdrec.backbones.causal import byte_tokenizer, tiny_llama
from rdrec.backbones.heads import IGNORE
from rdrec.methods.slim.student_module import SlimStudentModule, encode_pairs, render_prompt
from rdrec.teacher.backends.transformers import TransformersBackend

PROMPTS = ["The user chose these items, oldest first: A; B; C\nWhat next?", "The user chose: Z"]
TARGETS = ["1. Likes A.\n2. Recommend B.\n3. Recommend C.", "1. x 2. y 3. z"]


def student(**kw) -> SlimStudentModule:
    optimizer = lambda params: torch.optim.AdamW(params, lr=5e-2)  # noqa: E731
    return SlimStudentModule(tiny_llama(), optimizer, lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, **kw)


def test_byte_tokenizer_round_trips_any_text_without_files():
    tok = byte_tokenizer()
    text = "Amélie (2001) — «drôle» 1. The user… 🎬"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(tok) == 259 and tok.pad_token_id != tok.eos_token_id


def test_labels_mask_prompt_and_padding_and_keep_rationale_plus_eos():
    tok = byte_tokenizer()
    enc = encode_pairs(tok, PROMPTS, TARGETS)
    for i, (prompt, target) in enumerate(zip(PROMPTS, TARGETS)):
        p = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
        t = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels, ids, mask = enc["labels"][i], enc["input_ids"][i], enc["attention_mask"][i]
        assert ids[: len(p) + len(t)].tolist() == p + t
        assert (labels[: len(p)] == IGNORE).all()  # every prompt token masked
        assert labels[len(p): len(p) + len(t)].tolist() == t  # every rationale token (and eos) labelled
        assert (labels[len(p) + len(t):] == IGNORE).all() and (mask[len(p) + len(t):] == 0).all()  # padding
    # too long: the prompt loses its oldest tokens, the rationale is kept whole
    short = encode_pairs(tok, PROMPTS[:1], TARGETS[:1], max_length=60)
    t = tok(TARGETS[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert short["input_ids"].shape[1] == 60 and short["labels"][0, -len(t):].tolist() == t


def test_prompt_tokens_do_not_change_the_loss_and_get_no_gradient():
    torch.manual_seed(0)
    module = student()
    batch = {"prompt": PROMPTS, "target": TARGETS}
    enc = encode_pairs(module.tokenizer, PROMPTS, TARGETS)
    logits = module.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.detach()
    logits.requires_grad_(True)
    labels = enc["labels"][:, 1:]  # the next-token NLL over labelled positions, from the full logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                             ignore_index=IGNORE)
    loss.backward()
    # the gradient reaches exactly the positions that predict a rationale token
    predicts_rationale = torch.zeros_like(enc["labels"], dtype=torch.bool)
    predicts_rationale[:, :-1] = enc["labels"][:, 1:] != IGNORE
    grad_norm = logits.grad.abs().sum(-1)
    assert (grad_norm[~predicts_rationale] == 0).all() and (grad_norm[predicts_rationale] > 0).all()
    # the manual NLL over rationale tokens only equals the module's loss
    logp = torch.log_softmax(logits.detach()[:, :-1], -1)
    picked = [-logp[b, t, enc["labels"][b, t + 1]] for b, t in predicts_rationale[:, :-1].nonzero().tolist()]
    module_loss, tokens = module(batch)
    torch.testing.assert_close(module_loss, torch.stack(picked).mean(), rtol=1e-5, atol=1e-5)
    assert tokens == len(picked)


def test_lora_trains_adapters_only_and_the_merged_model_is_the_same_function(tmp_path):
    torch.manual_seed(0)
    module = student()
    base_before = {n: p.detach().clone() for n, p in module.model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in module.model.named_parameters() if "lora_" in n}
    assert lora_before and all(not p.requires_grad for n, p in module.model.named_parameters() if "lora_" not in n)
    opt = module.configure_optimizers()
    batch = {"prompt": PROMPTS, "target": TARGETS}
    first = None
    for _ in range(5):
        loss, _ = module(batch)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(module(batch)[0]) < first  # it learns
    for n, p in module.model.named_parameters():
        if "lora_" in n:
            continue
        assert torch.equal(p, base_before[n]), f"base weight {n} changed"
    assert any(not torch.equal(p, lora_before[n]) for n, p in module.model.named_parameters() if "lora_" in n)

    # checkpoints keep the adapters only
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])

    # the merged copy computes what the adapted model computes, and the module keeps its adapters
    module.eval()
    enc = encode_pairs(module.tokenizer, PROMPTS, TARGETS)
    merged = module.merged_model().eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        a = module.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        b = merged(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert any("lora_" in n for n, _ in module.model.named_parameters())


def test_training_prompt_format_is_the_generation_backends():
    from tests.test_teacher_fixtures import CHAT_TEMPLATE

    plain = byte_tokenizer()
    chat = byte_tokenizer()
    chat.chat_template = CHAT_TEMPLATE
    for tok in (plain, chat):
        backend = SimpleNamespace(tokenizer=tok)
        assert render_prompt(tok, PROMPTS[0]) == TransformersBackend.render(backend, [{"role": "user", "content": PROMPTS[0]}])


def test_seq2seq_backbones_are_refused():
    from rdrec.backbones import Backbone

    b = tiny_llama()
    with pytest.raises(ValueError, match="causal"):
        SlimStudentModule(Backbone(b.model, b.tokenizer, "seq2seq", "t5"), lambda params: None)


def test_backbone_configs_name_real_loaders():
    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from rdrec.utils.resolvers import CONFIG_DIR

    for name in ("tiny_llama", "smollm2", "gemma3_270m", "llama2_7b", "bloomz_560m", "bloomz_1b1"):
        cfg = OmegaConf.load(CONFIG_DIR / "backbone" / f"{name}.yaml")
        assert callable(get_method(cfg._target_)), name
    built = __import__("hydra").utils.instantiate(OmegaConf.load(CONFIG_DIR / "backbone" / "tiny_llama.yaml"))
    assert built.kind == "causal" and built.tokenizer.pad_token_id is not None


@pytest.mark.teacher_model
def test_smollm2_student_masks_its_chat_prompt():
    from rdrec.utils.resolvers import ROOT_DIR

    path = ROOT_DIR / "data" / "models" / "smollm2-135m-instruct"
    if not (path / "SOURCE.json").is_file():
        pytest.skip("SmolLM2 not converted yet (run rdrec-generate teacher=smollm2 once)")
    assert json.loads((path / "SOURCE.json").read_text())["format"] >= 1
    from rdrec.backbones.causal import smollm2

    b = smollm2(str(ROOT_DIR / "data"))
    enc = encode_pairs(b.tokenizer, PROMPTS[:1], TARGETS[:1])
    text = b.tokenizer.decode(enc["input_ids"][0][enc["labels"][0] != IGNORE])
    assert text.startswith("1. Likes A.") and "user" not in text.split("3.")[0].lower()


def test_test_step_generates_parses_and_scores_against_the_teacher():
    """With generate_tokens, test answers every held-out prompt greedily and reports the parse rate under the
    given parser and BLEU/ROUGE against the teacher's rationale; generation leaves the training mode as it was."""
    class OnlyFirst:  # a parser that accepts the first answer it sees, and no other
        def __init__(self):
            self.calls = 0

        def parse(self, text):
            self.calls += 1
            if self.calls > 1:
                raise ValueError("no three steps")
            return {"rationale": text}

    parser = OnlyFirst()
    module = student(parser=parser, generate_tokens=6)
    with pytest.raises(ValueError, match="needs strategy.parser"):
        student(generate_tokens=6)
    prompts = ["user likes a", "user likes b"]
    answers = module.generate(prompts)
    assert len(answers) == 2 and module.model.training
    assert answers == module.generate(prompts)  # greedy: deterministic
    module.on_test_epoch_start()
    batch = {"user": torch.tensor([3, 4]), "prompt": prompts, "target": [answers[0], "something else entirely"]}
    module.test_step(batch, 0)
    assert [g["user"] for g in module.generations] == [3, 4] and module.generations[0]["student"] == answers[0]
    metrics = module._generation_metrics()
    assert metrics["test/parse_rate"] == 0.5 and metrics["test/answers"] == 2.0
    assert all(0.0 <= metrics[f"test/{k}"] <= 1.0 for k in ("bleu4", "rouge1_f", "rouge2_f", "rougeL_f"))


def test_test_step_decodes_as_the_runner_does_with_the_merged_student(monkeypatch):
    """The held-out answers are what ``rdrec-generate`` would store: the runner's transformers backend around the
    merged student gives the same greedy text, and the parser's stop rule reaches the decoding loop."""
    from rdrec.teacher.backends.base import GenerationParams, Stop
    from rdrec.teacher.backends.transformers import TransformersBackend

    class WithStop:
        def parse(self, text):
            return {"rationale": text}

        def stop(self, kind):
            return Stop(3, 50, 4)

    module = student(parser=WithStop(), generate_tokens=8, repetition_penalty=1.1)
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero: give the adapters weight, so merging them changes the model
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    prompts = ["user likes a", "user likes bb and c"]
    runner = TransformersBackend.around(module.merged_model(), module.tokenizer)
    params = GenerationParams(max_new_tokens=8, do_sample=False, repetition_penalty=1.1)
    expected = [g.text.strip() for g in runner.generate([[{"role": "user", "content": p}] for p in prompts],
                                                        [0, 0], params, stop=Stop(3, 50, 4))]
    assert module.generate(prompts) == expected
    seen = []
    real = TransformersBackend.generate
    monkeypatch.setattr(TransformersBackend, "generate",
                        lambda self, chats, seeds, params, stop=None: seen.append(stop) or real(self, chats, seeds, params, stop))
    module.generate(prompts)
    assert seen == [Stop(3, 50, 4)]
