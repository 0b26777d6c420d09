"""DELRec's data side on synthetic data with a real (1-epoch) SR run, and both stages through rdrec-train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rdrec.cli.train import train
from rdrec.methods.delrec.artifacts import load_soft_prompt
from rdrec.methods.delrec.sr_model import load_sr_model, predict_topk, read_topk
from rdrec.errors import DataError
from tests.conftest import compose_cfg

K, N_SR = 6, 3
TINY = ["data=synthetic", "trainer.enable_progress_bar=false", "logger=csv"]


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sr")
    cfg = compose_cfg("train", tmp, [*TINY, "strategy=sr", "trainer.max_epochs=1", "seqrec.hidden_size=16"])
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # what the Hydra app writes beside every run
    return run


def _delrec_cfg(tmp: Path, sr_run: Path, strategy: str, extra=()):
    cfg = compose_cfg("train", tmp, [
        *TINY, f"strategy={strategy}", "backbone=tiny_llama", f"delrec.sr_run={sr_run}", f"delrec.num_candidates={K}",
        f"delrec.n_sr={N_SR}", "delrec.num_soft_tokens=4", "delrec.max_history=2", "data.examples_per_user=1",
        "data.batch_size=4", "data.eval_users=6", "data.eval_batch_size=3", "+trainer.limit_train_batches=2", *extra,
    ])
    cfg.paths.data_dir = str(sr_run.parent / "data")  # share the prepared dataset with the SR run
    return cfg


def _datamodule(tmp, sr_run, task="rec"):
    cfg = _delrec_cfg(tmp, sr_run, "delrec" if task == "rec" else "delrec_stage1")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def test_eval_lists_hold_target_sr_items_and_randoms_persisted(tmp_path, sr_run):
    dm = _datamodule(tmp_path, sr_run)
    prepared = dm.dataset
    interacted = prepared.all_items_per_user()
    for stage in ("valid", "test"):
        lists = dm._eval[stage].candidate_lists["delrec"]
        view = prepared.eval_view(stage)
        topk = read_topk(sr_run, stage, view.users)
        assert lists.candidates.shape == (len(view.users), K)
        assert np.array_equal(lists.candidates[np.arange(len(view.users)), lists.target_index], view.targets)
        positions = set()
        for row, user in enumerate(view.users):
            cands, target = lists.candidates[row], view.targets[row]
            assert len(set(cands.tolist())) == K
            others = set(cands.tolist()) - {target}
            assert not others & set(interacted[user].tolist())  # never an item the user touched
            sr_items = [i for i in topk[row] if i != target and i not in set(interacted[user].tolist())][:N_SR]
            assert set(sr_items) <= others  # the SR model's top items are shown
            positions.add(int(lists.target_index[row]))
        assert len(positions) > 2  # seeded shuffle: the answer is not always in one place
    files = sorted((Path(dm.cache_dir) / "candidates").glob("*sr_topk*"))
    assert len(files) == 2
    again = _datamodule(tmp_path / "again", sr_run)  # reloaded from disk, identical
    assert np.array_equal(again._eval["test"].candidate_lists["delrec"].candidates,
                          dm._eval["test"].candidate_lists["delrec"].candidates)
    assert len(again.eval_users("test")) == 6 and np.array_equal(again.eval_users("test"), dm.eval_users("test"))


def test_training_examples_come_from_the_training_view(tmp_path, sr_run):
    dm = _datamodule(tmp_path, sr_run)
    view = dm.train_view
    examples = dm.build_train_examples().rows
    users = [u for u, seq in enumerate(view.sequences) if len(seq) >= 2]
    assert len(examples) == len(users)
    for example, user in zip(examples, users):
        seq = view.sequences[user]
        assert example["target"] == seq[-1]  # the latest training item, never a valid/test target
        assert dm.prompts.titles[seq[-1]] in example["prompt"]
        assert dm.prompts.titles[seq[-2]] in example["prompt"].split("Candidates")[0]  # history shown
    evaluated = dm.dataset.eval_view("test")
    held_out = {dm.prompts.titles[i] for i in evaluated.targets} | {dm.prompts.titles[i] for i in dm.dataset.eval_view("valid").targets}
    train_titles = {dm.prompts.titles[i] for seq in view.sequences for i in seq}
    for example in examples:  # a held-out item never appears as a training answer
        assert dm.prompts.titles[example["target"]] not in held_out - train_titles


def test_stage1_examples_ta_and_rps_targets(tmp_path, sr_run):
    dm = _datamodule(tmp_path, sr_run, task="stage1")
    view = dm.train_view
    examples = dm.build_train_examples().rows
    users = [u for u, seq in enumerate(view.sequences) if len(seq) >= 3]
    model = load_sr_model(sr_run, view.num_items, view.num_users)
    sr_first = predict_topk(model, [view.sequences[u][:-1] for u in users], 1, 20)[:, 0]
    assert len(examples) == len(users)
    for example, user, first in zip(examples, users, sr_first):
        seq = view.sequences[user]
        assert example["ta_target"] == seq[-2]  # the item between the history and the latest item
        assert dm.prompts.titles[seq[-1]] in example["ta_prompt"]
        assert example["rps_target"] == first  # what the SR model recommends after seq[:-1]
        assert dm.prompts.titles[first] in example["rps_prompt"]


def test_missing_or_mismatched_sr_run_is_a_clear_error(tmp_path, sr_run):
    with pytest.raises(Exception, match="needs a trained SR model"):  # hydra wraps the DataError
        instantiate(_delrec_cfg(tmp_path, sr_run, "delrec", ["delrec.sr_run=null"]).data)
    dm = instantiate(_delrec_cfg(tmp_path, sr_run, "delrec", ["seed=7"]).data)
    with pytest.raises(DataError, match="another seed"):
        dm.prepare_data()
    with pytest.raises(DataError, match="stage-1"):
        load_soft_prompt(None)


@pytest.mark.slow
def test_both_stages_run_through_rdrec_train(tmp_path, sr_run):
    stage1_cfg = _delrec_cfg(tmp_path / "s1", sr_run, "delrec_stage1")
    assert train(stage1_cfg) == {}  # stage 1 trains the soft prompt only
    stage1_run = Path(stage1_cfg.paths.output_dir)
    prompt = load_soft_prompt(stage1_run)
    assert prompt.shape == (4, 32)
    ckpt = torch.load(stage1_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert list(ckpt) == ["lm.soft_prompt"]  # the frozen LLM is not copied into checkpoints

    stage2_cfg = _delrec_cfg(tmp_path / "s2", sr_run, "delrec", [f"delrec.stage1_run={stage1_run}",
                                                                    "trainer.max_epochs=1"])
    metrics = train(stage2_cfg)
    run = Path(stage2_cfg.paths.output_dir)
    on_disk = json.loads((run / "metrics.json").read_text())
    for key in ("test/delrec/hr@1", "test/delrec/hr@5", "test/delrec/ndcg@5", "val/delrec/ndcg@5"):
        assert 0.0 <= on_disk[key] <= 1.0
    assert on_disk == pytest.approx(metrics)
    ranks = (run / "ranks" / "test_delrec.csv").read_text().splitlines()
    assert len(ranks) == 1 + 6  # the 6-user evaluation subset, each once
    best = torch.load(next((run / "checkpoints").glob("epoch*.ckpt")), weights_only=False)["state_dict"]
    assert torch.equal(best["lm.soft_prompt"], prompt)  # stage 2 left the distilled prompt bit-identical


@pytest.mark.parametrize("overrides", [
    ["strategy=delrec_stage1"], ["strategy=delrec"], ["experiment=delrec_sr_eval"],
    ["experiment=delrec_ml100k_cpu", "strategy=delrec_stage1"], ["experiment=delrec_ml100k_cpu", "strategy=delrec"],
    ["experiment=delrec_ml100k_gpu", "strategy=delrec"], ["experiment=delrec_ml100k_cpu"],
])
def test_delrec_configs_compose_and_agree(tmp_path, overrides):
    cfg = compose_cfg("train", tmp_path, overrides)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if overrides == ["experiment=delrec_ml100k_cpu"]:
        return  # the budget settings composed with the default strategy (sr): only has to compose
    assert data["_target_"] == "rdrec.methods.delrec.datamodule.DelRecDataModule"
    lists = OmegaConf.to_container(cfg.eval.candidate_lists, resolve=True)
    assert lists["delrec"]["kind"] == "sr_topk" and lists["delrec"]["size"] == data["num_candidates"]
    assert cfg.eval.protocols.full is None and cfg.eval.protocols.delrec.name == "delrec"
    if "strategy=delrec" in overrides:
        assert cfg.strategy.num_soft_tokens == cfg.delrec.num_soft_tokens and cfg.strategy.adalora.init_r > 0
        assert cfg.strategy.soft_prompt.path is None  # set delrec.stage1_run


def test_a_personalised_teacher_caser_gets_each_prefix_owners_user_id(tmp_path):
    cfg = compose_cfg("train", tmp_path / "sr", [*TINY, "strategy=sr", "seqrec=caser", "trainer.max_epochs=1"])
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    dm = _datamodule(tmp_path, run, task="stage1")
    examples = dm.build_train_examples().rows  # used to fail: Caser needs the users
    view = dm.train_view
    users = [u for u, seq in enumerate(view.sequences) if len(seq) >= 3]
    model = load_sr_model(run, view.num_items, view.num_users)
    prefixes = [view.sequences[u][:-1] for u in users]
    first = predict_topk(model, prefixes, 1, 20, users=users)[:, 0]
    assert [e["rps_target"] for e in examples] == first.tolist()
    # the user id matters: the same prefixes with the users shifted give other predictions
    shifted = predict_topk(model, prefixes, 1, 20, users=[u % view.num_users + 1 for u in users])[:, 0]
    assert (shifted != first).any()
