"""Configs reject what they do not know (rdrec/cli/checks.py): an unknown key under data/strategy/eval, or a value
that cannot work, stops the run with one line naming the key, the config file it comes from and what is accepted;
strategies get only the run arguments they declare; one callback times training."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from rdrec.callbacks import EpochTiming, batch_rows
from rdrec.cli.checks import check_config, check_data_sizes
from rdrec.errors import ConfigError
from rdrec.utils.instantiate import declared_params, instantiate_declared
from rdrec.utils.resolvers import CONFIG_DIR
from tests.conftest import BIN


def composed(overrides=(), config_name="train", config_dir: Path = CONFIG_DIR, tmp_path: Path | None = None):
    """A config as a job sees it: composed with Hydra's runtime (choices, command-line overrides) set."""
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"] if tmp_path else []
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name, overrides=[*paths, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # conftest clears it after each test
    return cfg


def error_of(overrides, config_name="train", **kw) -> str:
    cfg = composed(overrides, config_name, **kw)
    with pytest.raises(ConfigError) as caught:
        check_config(cfg) if config_name == "train" else check_config(cfg, GENERATE_NODES, primary="generate")
    message = str(caught.value)
    assert "\n" not in message
    return message


GENERATE_NODES = ("data", "teacher.backend", "teacher.params", "teacher.retry", "subset", "families.rdrec",
                  "families.slim")


# ---- unknown keys ------------------------------------------------------------------------------------------------
def test_a_misspelt_strategy_key_is_named_with_its_source_and_the_accepted_keys():
    assert error_of(["+strategy.lossx=1"]) == (
        "unknown key strategy.lossx (command line): rdrec.modules.seqrec.SeqRecModule accepts loss, model, optimizer")


def test_a_misspelt_delrec_key_lists_what_stage_2_takes_along_its_parents():
    assert error_of(["strategy=delrec", "+strategy.lora_rnak=4"]) == (
        "unknown key strategy.lora_rnak (command line): rdrec.methods.delrec.module.DelRecModule accepts adalora, "
        "backbone, num_soft_tokens, optimizer, reduction, seed, soft_prompt, soft_prompt_init")


def test_unknown_keys_in_nested_objects_data_and_eval():
    assert error_of(["+data.batchsize=8"]).startswith(
        "unknown key data.batchsize (command line): rdrec.data.datamodule.SeqRecDataModule accepts batch_size, ")
    assert error_of(["+seqrec.hidden_sizee=8"]).startswith(  # strategy.model is ${seqrec}
        "unknown key strategy.model.hidden_sizee (command line): rdrec.models.sasrec.SASRec accepts attn_dropout, ")
    assert error_of(["+strategy.optimizer.lrr=1"]).startswith("unknown key strategy.optimizer.lrr (command line): "
                                                              "torch.optim.Adam accepts amsgrad, betas, ")
    assert error_of(["+data.split.user_coree=5"]).startswith("unknown key data.split.user_coree (command line)")
    assert error_of(["+eval.monitr=val/hr@10"]) == (
        "unknown key eval.monitr (command line): EvalConfig accepts ks, mrr_k, exclude_seen, monitor, monitor_mode, "
        "protocols, candidate_lists")
    assert error_of(["+eval.candidate_lists.sampled.sise=5"]) == (
        "unknown key eval.candidate_lists.sampled.sise (command line): a candidate list accepts kind, size, strategy, "
        "n_sr, sr_run")
    assert error_of(["+eval.protocols.full.exclude_sen=true"]).startswith("unknown key eval.protocols.full.exclude_sen")


def test_a_datamodule_subclass_rejects_keys_neither_it_nor_its_parent_takes():
    params, open_ = declared_params(get_object("rdrec.methods.delrec.datamodule.DelRecDataModule"))
    assert not open_ and {"sr_run", "n_sr", "batch_size", "source", "eval_users"} <= set(params)
    # the DELRec experiments set DELRec data keys: with the default strategy (plain SR data) they are unknown
    assert error_of(["experiment=delrec_ml100k_cpu"]).startswith(
        "unknown key data.examples_per_user (conf/experiment/delrec_ml100k_cpu.yaml): "
        "rdrec.data.datamodule.SeqRecDataModule accepts ")


def test_keys_the_run_sets_are_not_config_keys_and_required_ones_must_be_set():
    assert error_of(["+strategy.num_items=5"]) == (
        "strategy.num_items: set by the run from the data and the eval group, not a config key (command line)")
    assert error_of(["strategy=slim_student"]) == (
        "data.teacher: a value is required (the config leaves it `???`) (conf/strategy/slim_student.yaml)")
    assert error_of(["~strategy.optimizer"]) == (
        "strategy.optimizer: required by rdrec.modules.seqrec.SeqRecModule, not set (conf/strategy/sr.yaml)")
    assert error_of(["data.source._target_=rdrec.data.sources.nope.Nope"]) == (
        "data.source._target_: cannot import 'rdrec.data.sources.nope.Nope' (ImportError) (command line)")


def test_a_stale_key_left_in_a_yaml_file_names_that_file(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    stage2 = conf / "strategy" / "delrec.yaml"
    target = "  _target_: rdrec.methods.delrec.module.DelRecModule\n"
    assert target in stage2.read_text()
    stage2.write_text(stage2.read_text().replace(target, target + "  weighting: dynamic\n"))  # a stage-1 key left
    message = error_of(["strategy=delrec"], config_dir=conf)
    assert message.startswith("unknown key strategy.weighting (conf/strategy/delrec.yaml): "
                              "rdrec.methods.delrec.module.DelRecModule accepts adalora, ")
    with (conf / "_base" / "datamodule.yaml").open("a") as f:
        f.write("shuffle: true\n")  # a shared file, pulled in by every data config's defaults list
    assert error_of([], config_dir=conf).startswith("unknown key data.shuffle (conf/_base/datamodule.yaml): ")


def test_generate_rejects_unknown_keys_too():
    assert error_of(["+teacher.params.max_new_tokenz=8"], "generate").startswith(
        "unknown key teacher.params.max_new_tokenz (command line): rdrec.teacher.backends.base.GenerationParams "
        "accepts ")
    assert error_of(["+families.rdrec.item_nouns=movie"], "generate").startswith(
        "unknown key families.rdrec.item_nouns (command line): rdrec.teacher.prompts.RDRecFamily accepts ")
    check_config(composed([], "generate"), GENERATE_NODES, primary="generate")


def test_rdrec_data_checks_its_data_and_eval_groups():
    cfg = composed(["+data.split.min_ratng=4"], "data")
    with pytest.raises(ConfigError, match=r"^unknown key data.split.min_ratng \(command line\): "
                                          r"rdrec.data.split.SplitConfig accepts "):
        check_config(cfg, ("data", "eval"), primary="data")
    check_config(composed(["data=synthetic"], "data"), ("data", "eval"), primary="data")


# ---- values that cannot work -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "data.batch_size: expected a positive integer, got 0 (command line)"),
    ("data.eval_batch_size=-2", "data.eval_batch_size: expected a positive integer, got -2 (command line)"),
    ("data.max_len=0", "data.max_len: expected a positive integer, got 0 (command line)"),
    ("data.batch_size=many", "data.batch_size: Value 'many' of type 'str' could not be converted to Integer "
                             "(command line)"),
    ("data.eval_users=0", "data.eval_users: expected a positive integer or null, got 0 (command line)"),
    ("eval.ks=[]", "eval.ks: expected at least one value, got [] (command line)"),
    ("eval.ks=[0,10]", "eval.ks: expected positive integers, got [0, 10] (command line)"),
    ("eval.mrr_k=0", "eval.mrr_k: expected a positive integer or null, got 0 (command line)"),
    ("eval.monitor_mode=maximum", "eval.monitor_mode: Invalid value 'maximum', expected one of [max, min] "
                                  "(command line)"),
    ("eval.candidate_lists.sampled.size=0", "eval.candidate_lists.sampled.size: expected a positive integer, got 0 "
                                            "(command line)"),
])
def test_impossible_values(override, message):
    assert error_of([override]) == message


def test_shipped_configs_pass():  # every strategy and experiment: tests/test_train_app.py
    check_config(composed())
    check_config(composed(["strategy=delrec_stage1"]))
    check_config(composed(["eval=benchmark", "data=synthetic"]))


def test_a_monitor_key_the_run_never_logs():
    # full ranking logs val/<metric>@k, candidate protocols val/<protocol>/<metric>@k, for k in eval.ks
    assert error_of(["eval=full", "eval.ks=[5,10]", "eval.monitor=val/ndcg@20"]) == (
        "eval.monitor: 'val/ndcg@20' is never logged by this run (command line); expected one of val/hr@5, "
        "val/hr@10, val/mrr, val/ndcg@5, val/ndcg@10")
    assert error_of(["eval.ks=[10]", "eval.monitor=val/sampled/ndcg@5"]) == (
        "eval.monitor: 'val/sampled/ndcg@5' is never logged by this run (command line); expected one of val/hr@10, "
        "val/mrr, val/ndcg@10, val/sampled/hr@10, val/sampled/mrr, val/sampled/ndcg@10")
    assert error_of(["strategy=slim_student", "data.teacher=x", "eval.monitor=val/ndcg@10"]) == (
        "eval.monitor: 'val/ndcg@10' is never logged by this run (command line); expected one of val/loss, "
        "val/perplexity, val/tokens")
    assert error_of(["eval.ks=[1,5]"]).startswith(  # the default monitor, val/ndcg@10
        "eval.monitor: 'val/ndcg@10' is never logged by this run (conf/eval/default.yaml); expected one of val/hr@1,")
    check_config(composed(["eval=benchmark", "eval.monitor=val/full_seen/mrr@10"]))  # eval.mrr_k=10 logs it
    check_config(composed(["strategy=delrec"]))  # val/delrec/ndcg@5


def test_sizes_checked_against_the_data_once_it_is_set_up(tmp_path):
    cfg = composed(["data=synthetic", "eval.ks=[1,10,301]"], tmp_path=tmp_path)
    check_config(cfg)  # nothing to say before the data is known
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    assert (datamodule.num_items, datamodule.num_users) == (300, 200)
    with pytest.raises(ConfigError) as caught:
        check_data_sizes(cfg, datamodule)
    assert str(caught.value) == ("eval.ks: expected values ≤ the number of items (300), got 301 in [1, 10, 301] "
                                 "(command line)")
    cfg = composed(["data=synthetic", "data.eval_users=201"], tmp_path=tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_data_sizes(cfg, datamodule)
    assert str(caught.value) == ("data.eval_users: expected at most the number of users (200) or null (all), "
                                 "got 201 (command line)")
    check_data_sizes(composed(["data=synthetic", "eval.ks=[1,300]", "data.eval_users=200"]), datamodule)


# ---- the real command line -----------------------------------------------------------------------------------------
def run_train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([str(BIN / "rdrec-train"), *args, f"paths.data_dir={tmp_path / 'data'}",
                           f"paths.log_dir={tmp_path / 'logs'}", "hydra.job_logging.root.level=WARNING"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, line", [
    (["+strategy.lossx=1"], "rdrec: error: unknown key strategy.lossx (command line): "
                            "rdrec.modules.seqrec.SeqRecModule accepts loss, model, optimizer"),
    (["strategy=delrec", "+strategy.lora_rnak=4"], "rdrec: error: unknown key strategy.lora_rnak (command line): "
     "rdrec.methods.delrec.module.DelRecModule accepts adalora, backbone, num_soft_tokens, optimizer, reduction, "
     "seed, soft_prompt, soft_prompt_init"),
    (["data.batch_size=0"], "rdrec: error: data.batch_size: expected a positive integer, got 0 (command line)"),
    (["data=synthetic", "eval.ks=[1,10,400]"], "rdrec: error: eval.ks: expected values ≤ the number of items (300), "
                                               "got 400 in [1, 10, 400] (command line)"),
])
def test_the_cli_exits_with_one_line_and_no_traceback(args, line, tmp_path):
    proc = run_train(args, tmp_path)
    assert proc.returncode != 0
    output = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if output[:1] == ["Seed set to 42"]:  # Lightning's log line: the data-size check runs once the data is there
        output = output[1:]
    assert output == [line], output


# ---- strategies get only the run arguments they declare ----------------------------------------------------------
def test_instantiate_declared_hands_over_only_declared_arguments():
    node = OmegaConf.create({"_target_": "rdrec.modules.popularity.PopularityModule"})
    module = instantiate_declared(node, num_items=4, num_users=99, protocols={}, ks=[1, 2], mrr_k=None)
    assert module.counts.shape == (5,) and len(module.metrics) == 0  # num_users was not passed
    with pytest.raises(Exception, match="unexpected keyword argument 'num_users'"):  # no catch-all swallows it
        instantiate(node, num_items=4, num_users=99, protocols={})


def test_declared_params_follow_kwargs_up_the_mro_and_stay_open_only_for_a_catch_all():
    def anything(a, **kwargs):
        return a

    params, open_ = declared_params(anything)
    assert list(params) == ["a"] and open_
    params, open_ = declared_params(get_object("rdrec.methods.slim.rec_data.SlimRecDataModule"))
    assert not open_ and {"rationales", "item_fields", "max_len", "cache_dir"} <= set(params)


def test_slim_recommender_runs_its_parents_init(monkeypatch):
    from rdrec.methods.slim.rec_module import SlimRecModule
    from rdrec.modules.seqrec import SeqRecModule

    calls = []
    original = SeqRecModule.__init__

    def spy(self, *args, **kwargs):
        calls.append(args[1:3])
        original(self, *args, **kwargs)

    monkeypatch.setattr(SeqRecModule, "__init__", spy)
    module = SlimRecModule(None, num_items=6, num_users=3, protocols={}, optimizer=torch.optim.Adam, mode="matching",
                           text_dim=4, matching_hidden_size=2)
    assert calls == [(6, 3)] and module.loss_name == "bce" and module.num_items == 6
    with pytest.raises(ValueError, match="strategy.loss"):  # SeqRecModule's own check
        SlimRecModule(None, num_items=6, num_users=3, protocols={}, optimizer=torch.optim.Adam, mode="matching",
                      text_dim=4, loss="hinge")


# ---- one epoch-timing callback -------------------------------------------------------------------------------------
def test_batch_rows():
    assert batch_rows({"items": torch.zeros(3, 7), "user": torch.zeros(3)}) == 3
    assert batch_rows({"prompt": ["a", "b"], "target": torch.zeros(2)}) == 2
    assert batch_rows(torch.zeros(5, 2)) == 5
    assert batch_rows({}) == 0


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["x"]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader([{"x": torch.ones(2)}] * 7, batch_size=3)


def test_epoch_timing_logs_the_cost_keys_every_module_used_to_log(tmp_path):
    timing = EpochTiming()
    trainer = pl.Trainer(max_epochs=1, callbacks=[timing], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny())
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert set(logged) == {"train/epoch_seconds", "train/samples_per_s", "train/seconds_per_step",
                           "train/peak_gpu_mb", "train/peak_rss_mb"}
    assert timing._samples == 7 and len(timing._steps) == 3  # batches of 3, 3, 1
    assert logged["train/samples_per_s"] == pytest.approx(7 / logged["train/epoch_seconds"], rel=1e-5)
    assert logged["train/seconds_per_step"] == pytest.approx(sorted(timing._steps)[1], rel=1e-5)


def test_the_default_callbacks_include_epoch_timing():
    cfg = composed()
    assert cfg.callbacks.epoch_timing._target_ == "rdrec.callbacks.EpochTiming"


def test_check_data_sizes_needs_only_the_sizes():
    cfg = composed(["eval.ks=[1,5]"])
    check_data_sizes(cfg, SimpleNamespace(num_items=5, num_users=1))
    with pytest.raises(ConfigError, match=r"^eval.ks: expected values ≤ the number of items \(4\)"):
        check_data_sizes(cfg, SimpleNamespace(num_items=4, num_users=1))
