"""SLIM end to end on synthetic data: rdrec-train trains a tiny LoRA student and writes it; rdrec-generate
uses it as the backend and writes student rationales into the rationale store, from training histories only;
rdrec-train fits the fusion recommender on a rationale export and evaluates it with the shared evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from rdrec.cli.train import train
from tests.conftest import compose_cfg, run_cli
from tests.test_slim_fixtures import synthetic_prepared, write_export

SYNTH = ["data=synthetic", "data.source.num_users=40", "data.source.num_items=60", "data.source.min_len=5",
         "data.source.max_len=12", "data.source.with_reviews=false", "data.split.seed=42"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slimcli")
    prepared = synthetic_prepared(tmp / "data" / "cache")  # the cache the CLI reads (paths.data_dir=tmp/data)
    return tmp, prepared, write_export(prepared, tmp / "teacher_export", users=30)


@pytest.mark.slow
def test_student_trains_then_generates_into_the_store_from_training_history_only(world):
    from rdrec.teacher.store import RationaleStore

    tmp, prepared, export = world
    common = [*SYNTH, f"paths.data_dir={tmp / 'data'}", f"paths.log_dir={tmp / 'logs'}"]
    run = tmp / "student_run"
    run_cli("rdrec-train", [*common, "strategy=slim_student", "backbone=tiny_llama", f"data.teacher={export}",
                            "data.valid_users=4", "data.heldout_users=6", "data.max_samples=12", "trainer.max_epochs=1",
                            "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"], cwd=tmp)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/loss"] > 0 and metrics["test/tokens"] > 0 and "val/loss" in metrics
    assert (run / "student" / "model.safetensors").is_file() and (run / "student" / "tokenizer.json").is_file()
    answers = [json.loads(line) for line in (run / "test_generations.jsonl").read_text().splitlines()]
    assert len(answers) == metrics["test/answers"] == 6  # every held-out user's answer, and whether it parsed
    assert {"user", "prompt", "teacher", "student", "parsed"} <= set(answers[0])
    import torch
    ckpt = torch.load(next((run / "checkpoints").glob("epoch*.ckpt")), weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # adapters only

    run_cli("rdrec-generate", [*common, "teacher=slim_student", f"teacher.backend.model={run / 'student'}",
                               "prompts@families.slim=slim_student", "~prompts@families.rdrec", "subset.users=5",
                               "teacher.params.max_new_tokens=8", "teacher.retry.max_retries=0",
                               f"export_dir={tmp / 'student_export'}", f"hydra.run.dir={tmp / 'gen_run'}"], cwd=tmp)
    records = list(RationaleStore(tmp / "data" / "rationales" / "synthetic").reload().records())
    assert len(records) == 5 and all(r["provenance"]["model_id"].startswith("slim-student:") for r in records)
    view = prepared.train_view()
    tests = dict(zip(prepared.eval_view("test").users.tolist(), prepared.eval_view("test").targets.tolist()))
    valids = dict(zip(prepared.eval_view("valid").users.tolist(), prepared.eval_view("valid").targets.tolist()))
    for r in records:
        user = r["entity"]["user"]
        assert [m["role"] for m in r["messages"]] == ["user"]  # the simplified prompt only, as in training
        shown = r["extra"]["history_items"]
        assert set(shown) <= set(view.sequences[user].tolist())
        assert (tests[user] in shown) == (tests[user] in view.sequences[user]) and \
               (valids[user] in shown) == (valids[user] in view.sequences[user])
    assert (tmp / "student_export" / "meta.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy,seqrec", [("slim", "sasrec"), ("slim_agnostic", "sasrec"), ("slim_backbone", "gru4rec")])
def test_slim_recommender_trains_and_is_evaluated_by_the_shared_evaluator(world, strategy, seqrec, tmp_path):
    tmp, prepared, export = world
    cfg = compose_cfg("train", tmp_path, [*SYNTH, f"strategy={strategy}", f"seqrec={seqrec}",
                                          f"slim.student_rationales={export}", "eval.candidate_lists.sampled.size=20",
                                          "trainer.max_epochs=2", "trainer.enable_progress_bar=false"])
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp / "data")
        cfg.data.cache_dir = str(tmp / "data" / "cache")
        if cfg.data.encoder is not None:  # a hashing encoder instead of MiniLM: no model needed
            cfg.data.encoder = {"_target_": "tests.test_slim_fixtures.HashEncoder", "dim": 16}
            cfg.strategy.text_dim = 16
    metrics = train(cfg)
    for key in ("test/hr@10", "test/hr@20", "test/ndcg@10", "test/sampled/hr@10", "test/sampled/ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["data/users_with_rationale"] == (0 if strategy == "slim_backbone" else 30)
    assert (Path(cfg.paths.output_dir) / "topk" / "test.parquet").is_file()


def test_a_variant_that_reads_rationales_without_any_fails_clearly(world, tmp_path):
    tmp, _, _ = world
    cfg = compose_cfg("train", tmp_path, [*SYNTH, "strategy=slim", "eval.candidate_lists.sampled.size=20",
                                          "trainer.max_epochs=1", "trainer.enable_progress_bar=false"])
    with open_dict(cfg):
        cfg.data.cache_dir = str(tmp / "data" / "cache")
        cfg.data.encoder = {"_target_": "tests.test_slim_fixtures.HashEncoder", "dim": 16}
        cfg.strategy.text_dim = 16
    with pytest.raises(ValueError, match="data.rationales is not set"):
        train(cfg)


def test_a_fine_tuned_encoder_trains_with_the_recommender(world, tmp_path):
    """train_encoder=true: the encoder's weights change with the recommender's, and evaluation uses them."""
    import torch

    tmp, _, export = world
    cfg = compose_cfg("train", tmp_path, [*SYNTH, "strategy=slim", f"slim.student_rationales={export}",
                                          "strategy.train_encoder=true", "eval.candidate_lists.sampled.size=20",
                                          "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                                          "~callbacks.save_topk"])
    with open_dict(cfg):
        cfg.data.cache_dir = str(tmp / "data" / "cache")
        cfg.data.encoder = {"_target_": "tests.test_slim_fixtures.TinyTrainableEncoder", "dim": 16}
        cfg.strategy.text_dim = 16
    from tests.test_slim_fixtures import TinyTrainableEncoder

    before = TinyTrainableEncoder(16).bag.weight.detach().clone()
    metrics = train(cfg)
    ckpt = torch.load(next((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch*.ckpt")), weights_only=False)
    after = ckpt["state_dict"]["encoder.bag.weight"]
    assert not torch.equal(before, after)
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
