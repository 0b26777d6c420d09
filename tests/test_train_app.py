"""The rdrec-train app end to end: composed from config, run in-process and as the console script."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from rdrec.cli.train import train
from tests.conftest import compose_cfg, run_cli

SYNTH = ["data=synthetic", "strategy=pop", "trainer.enable_progress_bar=false"]


def test_train_pop_on_synthetic_writes_metrics_and_ranks(tmp_path):
    cfg = compose_cfg("train", tmp_path, SYNTH)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == pytest.approx(metrics)
    for key in ("test/hr@10", "test/ndcg@10", "test/mrr", "val/ndcg@10", "test/sampled/hr@10"):
        assert key in on_disk and 0.0 <= on_disk[key] <= 1.0
    ranks = pd.read_csv(out / "ranks" / "test.csv")
    assert ranks["user"].is_unique and len(ranks) == cfg.data.source.num_users
    # metrics.json is exactly the mean over the saved per-user ranks
    assert on_disk["test/hr@10"] == pytest.approx((ranks["rank"] <= 10).mean())
    assert on_disk["test/mrr"] == pytest.approx((1.0 / ranks["rank"]).mean())


def test_unknown_dataset_or_strategy_names_the_group(tmp_path):
    with pytest.raises(MissingConfigException, match=r"data/nope"):
        compose_cfg("train", tmp_path, ["data=nope"])
    with pytest.raises(MissingConfigException, match=r"strategy"):
        compose_cfg("train", tmp_path, ["strategy=nope"])


# what a run of an option needs besides the option: a value its config leaves `???`, the strategy it is meant for
NEEDS = {"strategy=slim_student": [["data.teacher=teacher_export"]],
         "experiment=delrec_ml100k_cpu": [["strategy=delrec_stage1"], ["strategy=delrec"]],
         "experiment=delrec_ml100k_gpu": [["strategy=delrec_stage1"], ["strategy=delrec"]]}


def test_every_config_group_option_composes(tmp_path):
    from rdrec.cli.checks import check_config
    from rdrec.utils.resolvers import CONFIG_DIR

    for group in ("data", "strategy", "eval", "trainer", "logger", "experiment"):
        for option in sorted((CONFIG_DIR / group).glob("*.yaml")):
            cfg = compose_cfg("train", tmp_path, [f"{group}={option.stem}"])
            OmegaConf.to_container(cfg.data, resolve=True)
            # what rdrec-train instantiates is there (a `???` left for the command line is allowed elsewhere)
            assert cfg.data._target_ and cfg.strategy._target_ and cfg.trainer._target_, f"{group}={option.stem}"
            if group in ("data", "strategy", "eval", "experiment"):  # no stale or unknown key, no impossible value
                for needs in NEEDS.get(f"{group}={option.stem}", [[]]):
                    check_config(compose_cfg("train", tmp_path, [f"{group}={option.stem}", *needs]))


@pytest.mark.slow
def test_multirun_seeds_give_one_run_dir_each(tmp_path):
    run_cli("rdrec-train", ["-m", "seed=1,2", *SYNTH, f"paths.data_dir={tmp_path / 'data'}",
                            f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path)
    runs = sorted((tmp_path / "logs").glob("train/multiruns/*/*/metrics.json"))
    assert len(runs) == 2
    seeds = [OmegaConf.load(r.parent / ".hydra" / "config.yaml").seed for r in runs]
    assert sorted(seeds) == [1, 2]


@pytest.mark.slow
def test_ddp_cpu_evaluates_every_test_user_exactly_once(tmp_path, ml100k_root):
    proc = run_cli(
        "rdrec-train",
        # one epoch of SASRec: gradients really synchronise, then every test user is ranked exactly once
        ["trainer=ddp_cpu", "data=ml100k", "trainer.max_epochs=1", f"data.source.root={ml100k_root}", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={tmp_path / 'run'}", "trainer.enable_progress_bar=false", "data.eval_users=500"],
        cwd=tmp_path,
    )
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # two processes really ran
    ranks = pd.read_csv(tmp_path / "run" / "ranks" / "test.csv")
    assert len(ranks) == 500 and ranks["user"].is_unique  # the evaluated subset, split between the processes
    for stage in ("valid", "test"):  # the SR model's predictions cover every user, written whole by one process
        topk = pd.read_parquet(tmp_path / "run" / "topk" / f"{stage}.parquet")
        assert len(topk) == 943 and topk["user"].is_unique
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/hr@10"] == pytest.approx((ranks["rank"] <= 10).mean())


def test_best_checkpoint_is_validated_again_only_when_fit_did_not_just_validate_it(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    calls = []
    real = pl.Trainer.validate
    monkeypatch.setattr(pl.Trainer, "validate", lambda self, *a, **k: calls.append(k["ckpt_path"]) or real(self, *a, **k))
    sr = ["data=synthetic", "strategy=sr", "trainer.enable_progress_bar=false"]
    # one epoch, validated at its end: the best checkpoint is those weights, so no second validation pass ...
    cfg = compose_cfg("train", tmp_path / "a", [*sr, "trainer.max_epochs=1"])
    once = train(cfg)
    assert calls == []
    # ... and the metrics it reports are exactly what validating that checkpoint afresh gives
    best = next((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))
    again = train(compose_cfg("train", tmp_path / "b", [*sr, "train=false", f"ckpt_path={best}"]))
    assert calls == [str(best)]
    assert {k: v for k, v in once.items() if k.startswith("val/")} == pytest.approx(
        {k: v for k, v in again.items() if k.startswith("val/")}, abs=0)
    # training went on after the last validation (epoch 3 is never validated): validate the best checkpoint
    calls.clear()
    train(compose_cfg("train", tmp_path / "c", [*sr, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]))
    assert len(calls) == 1 and "epoch001" in calls[0]
