"""DELRec learns a planted rule within a short CPU run (``rdrec.methods.delrec.probe``), through the real modules and a
Lightning Trainer: stage 2 (AdaLoRA, the strategy config's schedule) picks the candidate of the last history item's
franchise on held-out examples; stage 1's soft prompt (LLM frozen) learns to imitate a planted SR model.

The LLM is a tiny random Llama over a word-level vocabulary (a franchise is one token), so it runs in about a minute
on 2 CPU cores without downloads. A random 2-layer model needs a larger learning rate than the pretrained SmolLM2
(the strategy configs' values come from the SmolLM2 sweep in experiments/delrec/README.md); with the former
stage-2 rate (5e-4) this test stays at chance (shown there)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rdrec.backbones import Backbone
from rdrec.methods.delrec.datamodule import PromptExamples
from rdrec.methods.delrec.module import DelRecModule
from rdrec.methods.delrec.probe import PlantedRule, hit_rate_at_1
from rdrec.methods.delrec.stage1 import DelRecStage1Module
from rdrec.utils.resolvers import CONFIG_DIR

LETTERS = "abcdefghijkl"
TEMPLATES = {"rec": "{history} | {soft} | {candidates} >", "rps": "{history} | {soft} | {candidates} >",
             "separator": " ; "}
# A tiny random model needs 4x SmolLM2's stage-2 rate (400 steps: 2e-2 -> held-out HR@1 0.735, the former default
# 5e-4 -> 0.225, chance 0.25; experiments/delrec/README.md); stage 1 uses the configured soft-prompt rate.
STAGE2_LR = 2e-2
STAGE1_LR = OmegaConf.load(CONFIG_DIR / "strategy" / "delrec_stage1.yaml").strategy.optimizer.lr


def word_backbone(hidden: int = 64, seed: int = 0) -> Backbone:
    words = ["<pad>", "<unk>", "<s>", "</s>", *LETTERS, *[str(i) for i in range(1, 9)], "|", ";", ">"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")
    config = LlamaConfig(vocab_size=len(words), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return Backbone(model=model, tokenizer=tokenizer, kind="causal", name="tiny-word-llama")


def planted() -> PlantedRule:
    # favourite 5: the franchise the untrained model ranks first at chance level (0.25 on the held-out RPS lists)
    rule = PlantedRule(names=tuple(LETTERS), per_franchise=8, history=4, k=4, templates=TEMPLATES, favourite=5)
    rule.titles = [""] + [f"{n} {j + 1}" for n in rule.names for j in range(rule.per_franchise)]
    from rdrec.methods.delrec.prompts import DelRecPrompts

    rule.prompts = DelRecPrompts(rule.titles, "SASRec", TEMPLATES, max_history=rule.history)
    return rule


def configured_adalora() -> dict:
    cfg = OmegaConf.load(CONFIG_DIR / "strategy" / "delrec.yaml")
    return OmegaConf.to_container(cfg.strategy.adalora)


def fit(module, rows: list[dict], steps: int, batch_size: int = 8) -> None:
    torch.manual_seed(0)
    loader = DataLoader(PromptExamples(rows), batch_size=batch_size, shuffle=True, collate_fn=PromptExamples.collate)
    pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(module, train_dataloaders=loader)


def train_stage2(lr: float, steps: int = 400):
    rule = planted()
    module = DelRecModule(backbone=word_backbone(), protocols={}, optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
                          num_soft_tokens=4, adalora=configured_adalora())
    module.use_prompts(rule.prompts)
    train = [{"prompt": e["prompt"], "target": e["target"]} for e in rule.rec_examples(steps * 8, seed=1)]
    fit(module, train, steps)
    return module, hit_rate_at_1(module, rule.rec_examples(200, seed=2))


@pytest.mark.slow
def test_stage2_learns_the_planted_rule_on_held_out_examples():
    module, hr1 = train_stage2(STAGE2_LR)
    assert module.schedule == {"total_step": 400, "tinit": 40, "tfinal": 80, "deltaT": 20}  # sized to the run
    print(f"stage 2 HR@1 {hr1:.3f}")
    assert hr1 >= 0.5  # chance: 1/K = 0.25


@pytest.mark.slow
def test_stage1_soft_prompt_learns_to_imitate_a_planted_sr_model():
    module, before, after, llm_moved = train_stage1(STAGE1_LR)
    assert not llm_moved  # the LLM did not move
    print(f"stage 1 RPS HR@1 before {before:.3f}, after {after:.3f}")
    assert before < 0.35 and after >= 0.5, (before, after)  # chance: 0.25


def train_stage1(lr: float, steps: int = 150):
    rule = planted()
    module = DelRecStage1Module(backbone=word_backbone(), protocols={}, optimizer=lambda params: torch.optim.AdamW(params, lr=lr),
                                tasks=["rps"], num_soft_tokens=4)
    module.use_prompts(rule.prompts)
    llm = {k: v.clone() for k, v in module.lm.model.state_dict().items()}
    held_out = rule.rps_examples(200, seed=2)
    before = hit_rate_at_1(module, held_out, task="rps")
    fit(module, [{"rps_prompt": e["rps_prompt"], "rps_target": e["rps_target"]}
                 for e in rule.rps_examples(steps * 8, seed=1)], steps)
    after = hit_rate_at_1(module, held_out, task="rps")
    moved = not all(torch.equal(v, llm[k]) for k, v in module.lm.model.state_dict().items())
    return module, before, after, moved
