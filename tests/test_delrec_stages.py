"""DELRec's two stages under a real Lightning Trainer: what each stage may change, and evaluation via the shared evaluator."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rdrec.methods.delrec.datamodule import PromptExamples
from rdrec.methods.delrec.prompts import DelRecPrompts
from rdrec.eval.protocols import CandidateRanking
from rdrec.methods.delrec.module import DelRecModule
from rdrec.methods.delrec.stage1 import DelRecStage1Module, DynamicWeightAverage
from tests.test_delrec_models import KINDS, tiny_backbone

TITLES = ["", "star wars", "star trek", "toy story", "alien", "aliens", "heat", "fargo", "casablanca"]
PROMPTS = DelRecPrompts(TITLES, "SASRec", max_history=3)
ADAM = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731


def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)


def _stage1_loader():
    rows = [
        {"ta_prompt": PROMPTS.ta([3, 6], 2, [1, 4, 7]), "ta_target": 4,
         "rps_prompt": PROMPTS.rps([3, 6, 4], [1, 2, 8]), "rps_target": 1},
        {"ta_prompt": PROMPTS.ta([7], 8, [6, 5, 3]), "ta_target": 6,
         "rps_prompt": PROMPTS.rps([7, 6], [2, 5, 3]), "rps_target": 2},
    ]
    return DataLoader(PromptExamples(rows), batch_size=2, collate_fn=PromptExamples.collate)


def _stage2_loader():
    rows = [{"prompt": PROMPTS.rec([3, 6], [1, 2, 7]), "target": 2}, {"prompt": PROMPTS.rec([7, 8], [4, 5, 6]), "target": 5}]
    return DataLoader(PromptExamples(rows), batch_size=2, collate_fn=PromptExamples.collate)


def _stage1(kind, **kw):
    module = DelRecStage1Module(backbone=tiny_backbone(kind), protocols={}, optimizer=ADAM,
                                num_soft_tokens=4, **kw)
    module.use_prompts(PROMPTS)
    return module


@pytest.mark.parametrize("kind", KINDS)
def test_stage1_updates_only_the_soft_prompt(kind):
    module = _stage1(kind)
    llm_before = copy.deepcopy(module.lm.model.state_dict())
    prompt_before = module.lm.soft_prompt.detach().clone()
    _trainer(2).fit(module, train_dataloaders=_stage1_loader())
    assert module.global_step == 2
    after = module.lm.model.state_dict()
    assert after.keys() == llm_before.keys()
    assert all(torch.equal(after[k], llm_before[k]) for k in llm_before)  # bit-identical LLM
    assert not torch.equal(module.lm.soft_prompt.detach(), prompt_before)
    trained = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trained == ["lm.soft_prompt"]


@pytest.mark.parametrize("kind", KINDS)
def test_stage2_freezes_the_soft_prompt_and_trains_adalora(kind, tmp_path):
    distilled = torch.randn(4, 32)
    module = DelRecModule(backbone=tiny_backbone(kind), protocols={}, optimizer=ADAM,
                          soft_prompt=distilled, num_soft_tokens=4,
                          adalora={"init_r": 4, "target_r": 2, "tinit": 0, "tfinal": 1, "deltaT": 1, "total_step": 3})
    module.use_prompts(PROMPTS)
    base_before = {k: v.clone() for k, v in module.lm.model.state_dict().items()}
    trainer = _trainer(3)
    trainer.fit(module, train_dataloaders=_stage2_loader())
    assert torch.equal(module.lm.soft_prompt.detach(), distilled)  # bit-identical
    state = module.lm.model.state_dict()
    lora = [k for k in state if "lora_" in k]
    assert lora and any(not torch.equal(state[k], torch.zeros_like(state[k])) for k in lora if "lora_E" in k)
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in state.items()
            if "lora_" not in k and "ranknum" not in k}
    assert base.keys() == base_before.keys()
    assert all(torch.equal(base[k], base_before[k]) for k in base_before)  # the LLM itself is untouched
    # checkpoints keep only the soft prompt and the adapters
    path = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["state_dict"]
    assert "lm.soft_prompt" in saved and all(("lora_" in k or "ranknum" in k or k == "lm.soft_prompt") for k in saved)


def test_stage2_without_stage1_or_adalora():
    module = DelRecModule(backbone=tiny_backbone("causal"), protocols={}, optimizer=ADAM,
                          soft_prompt=None, adalora=None, num_soft_tokens=4)
    assert not any(p.requires_grad for p in module.parameters())
    with pytest.raises(RuntimeError, match="train=false"):
        module.configure_optimizers()
    with pytest.raises(ValueError, match="shape"):
        DelRecModule(backbone=tiny_backbone("causal"), protocols={}, optimizer=ADAM,
                     soft_prompt=torch.zeros(3, 32), num_soft_tokens=4)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_goes_through_the_shared_candidate_protocol(kind):
    module = DelRecModule(backbone=tiny_backbone(kind), protocols={"delrec": CandidateRanking("delrec")},
                          optimizer=ADAM, num_soft_tokens=4, ks=(1, 5))
    module.use_prompts(PROMPTS)
    batch = {
        "user": torch.tensor([1, 2]),
        "history": torch.tensor([[0, 3, 6], [7, 8, 6]]),
        "target": torch.tensor([2, 5]),
        "delrec_candidates": torch.tensor([[1, 2, 7, 4], [4, 5, 6, 0]]),  # 0 = padding, never ranked
        "delrec_target_index": torch.tensor([1, 1]),
    }
    module.eval()
    module._update_metrics(batch, "test")
    values = module.metrics["test_delrec"].compute()
    assert 0.0 <= float(values["hr@1"]) <= float(values["hr@5"]) == 1.0  # the positive is always within 4 items
    scores = module.score_candidates(batch, batch["delrec_candidates"])
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()
    with pytest.raises(NotImplementedError, match="candidate protocols"):
        module.score_all(batch)


def test_dynamic_weight_average_favours_the_slower_task():
    dwa = DynamicWeightAverage(["ta", "rps"], temperature=1.0, window=2)
    for losses in ({"ta": 2.0, "rps": 2.0},) * 2 + ({"ta": 2.0, "rps": 1.0},) * 2:
        assert sum(dwa.weights().values()) == pytest.approx(2.0)
        dwa.update(losses)
    w = dwa.weights()
    assert w["ta"] > 1.0 > w["rps"] and sum(w.values()) == pytest.approx(2.0)


def test_fixed_weighting_and_task_subsets():
    module = _stage1("causal", tasks=["rps"], weighting="fixed", weights={"rps": 0.5})
    assert module.task_weights() == {"rps": 0.5}
    rows = [{"rps_prompt": PROMPTS.rps([3, 6], [1, 2, 8]), "rps_target": 1}]
    loss = module.training_step(PromptExamples.collate(rows), 0)
    assert torch.isfinite(loss) and loss.requires_grad
    with pytest.raises(ValueError, match="subset"):
        _stage1("causal", tasks=["xyz"])
