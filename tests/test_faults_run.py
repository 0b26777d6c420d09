"""Fault injection for runs: colliding run directories, checkpoints that would run code, corrupt checkpoints,
kill -9 and resume (rdrec/utils/rundir.py, rdrec/utils/checkpoints.py, rdrec/cli/resume.py, rdrec/data/order.py)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from rdrec.errors import DataError
from rdrec.utils.resolvers import ROOT_DIR

KILL_ENV = "RDREC_TEST_KILL_AT_STEP"
KILL_TEST_ENV = "RDREC_TEST_KILL_AT_TEST"
# a tiny SASRec on the synthetic data: 4 training batches per epoch, 3 epochs
TINY = ["data=synthetic", "seqrec.hidden_size=16", "seqrec.inner_size=32", "seqrec.num_layers=1",
        "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger=csv"]


class KillAt(pl.Callback):
    """kill -9 of its own process before the optimiser step number ``$RDREC_TEST_KILL_AT_STEP`` (inactive when
    the variable is unset, so a resumed run may carry it in its config)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = os.environ.get(KILL_ENV)
        if step and trainer.global_step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtTest(pl.Callback):
    """kill -9 of its own process as testing starts (inactive when ``$RDREC_TEST_KILL_AT_TEST`` is unset)."""

    def on_test_start(self, trainer, pl_module):
        if os.environ.get(KILL_TEST_ENV):
            os.kill(os.getpid(), signal.SIGKILL)


class Payload:
    """Unpickling this writes ``path``: what a crafted checkpoint would do with a real payload."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, KILL_TEST_ENV)}
    env.update({"WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT_DIR), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _train(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rdrec.cli.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("rdrec: error:")]


# ---- run directories ------------------------------------------------------------------------------------------

_AT_INSTANT = """
import sys, time
from rdrec.cli.train import main   # the slow imports first, then start together
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.argv = ["rdrec-train", *sys.argv[2:]]
main()
"""


def _start_together(arg_lists: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    at = str(int(time.time()) + 30 + 0.05)  # a common instant just after a second boundary, after the imports
    procs = [subprocess.Popen([sys.executable, "-c", _AT_INSTANT, at, *args], cwd=cwd, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in arg_lists]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_two_trainings_started_at_the_same_instant_get_a_run_directory_each(tmp_path):
    common = ["data=synthetic", "strategy=pop", "trainer.enable_progress_bar=false", "logger=csv",
              f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"]
    procs = _start_together([[*common, "seed=1"], [*common, "seed=2"]], tmp_path)
    for p in procs:
        assert p.returncode == 0, p.stderr[-2000:]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    seeds = []
    for run in runs:
        assert (run / "metrics.json").is_file()
        seeds.append(OmegaConf.load(run / ".hydra" / "config.yaml").seed)
        assert json.loads((run / ".rdrec-run.json").read_text())["id"]
    assert sorted(seeds) == [1, 2]
    # each run's metrics.json holds its own numbers (the seeds give different splits, hence different metrics)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert metrics[0] != metrics[1]


@pytest.mark.slow
def test_two_trainings_told_to_share_one_run_directory_one_refuses(tmp_path):
    common = ["data=synthetic", "strategy=pop", "trainer.enable_progress_bar=false", "logger=csv",
              f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"]
    procs = _start_together([[*common, "seed=1"], [*common, "seed=2"]], tmp_path)
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, [p.stderr[-1000:] for p in procs]
    winner, loser = sorted(procs, key=lambda p: p.returncode)
    (line,) = _error_lines(loser)
    assert str(tmp_path / "run") in line and "Traceback" not in loser.stderr
    seed = int(next(a for a in winner.args if a.startswith("seed=")).split("=")[1])
    assert OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").seed == seed  # the winner's config stayed
    # and a later run into that finished directory is refused before anything is written
    again = _train([*common, "seed=3"], tmp_path)
    assert again.returncode != 0 and "already holds the results" in _error_lines(again)[0]
    assert OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").seed == seed


def _claim_at(run_dir: str, at: float, barrier) -> str:
    from rdrec.utils import rundir

    time.sleep(max(0.0, at - time.time()))
    try:
        rundir.claim(run_dir)
        result = "won"
    except rundir.RunDirError as err:
        result = str(err)
    barrier.wait(timeout=60)  # every claimant stays alive until all have tried
    return result


def test_simultaneous_claims_of_one_directory_have_exactly_one_winner(tmp_path):
    # the marker is created whole (a hard link of a written file): a second claim never reads it empty and takes
    # it for a dead run's (CI once saw both runs pass the claim, then the loser's config overwrite the winner's)
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        with ctx.Manager() as manager:
            barrier = manager.Barrier(6)
            with ctx.Pool(6) as pool:
                results = pool.starmap(_claim_at, [(str(run_dir), time.time() + 0.5, barrier)] * 6)
        assert results.count("won") == 1, results
        assert all("in use by another run" in r for r in results if r != "won"), results
        assert not list(run_dir.glob("*.tmp"))


def test_results_writer_refuses_a_directory_another_run_owns(tmp_path):
    from rdrec.utils import rundir
    from rdrec.utils.report import write_metrics

    rundir.claim(tmp_path)
    write_metrics(tmp_path / "metrics.json", {"test/hr@10": 0.5})  # its own directory: fine
    # another job takes the directory over (here: rewrites the marker), then this job tries to write again
    marker = json.loads((tmp_path / rundir.MARKER).read_text())
    (tmp_path / rundir.MARKER).write_text(json.dumps({**marker, "id": "another", "pid": 1}))
    with pytest.raises(rundir.RunDirError, match="refusing to write results into .*another run"):
        write_metrics(tmp_path / "metrics.json", {"test/hr@10": 0.9})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test/hr@10": 0.5}


# ---- loads that cannot run code -------------------------------------------------------------------------------

def _crafted_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "payload": Payload(str(marker))}, path)
    pickle.loads(pickle.dumps(Payload(str(marker))))
    assert marker.exists()  # the payload really runs when unpickled
    marker.unlink()


def test_crafted_checkpoint_in_an_sr_run_is_refused_and_runs_nothing(tmp_path):
    from rdrec.methods.delrec.sr_model import load_sr_model

    run, marker = tmp_path / "sr_run", tmp_path / "PWNED"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "seed: 1\ndata: {max_len: 5, source: {_target_: x}}\nstrategy: {_target_: rdrec.modules.seqrec.SeqRecModule}\n"
        "seqrec: {_target_: rdrec.models.sasrec.SASRec, _partial_: true, hidden_size: 8, num_layers: 1, "
        "num_heads: 1, inner_size: 8, dropout: 0.0, max_len: 5}\n")
    _crafted_checkpoint(run / "checkpoints" / "epoch000.ckpt", marker)
    with pytest.raises(DataError) as err:
        load_sr_model(run, num_items=10, num_users=3)
    assert not marker.exists()
    msg = str(err.value)
    assert "epoch000.ckpt" in msg and "refused" in msg and "RDREC_TRUST_CHECKPOINTS" in msg and "\n" not in msg
    assert "weights_only=False" not in msg


def test_crafted_stage1_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from rdrec.methods.delrec.artifacts import load_soft_prompt

    marker = tmp_path / "PWNED"
    _crafted_checkpoint(tmp_path / "stage1" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(DataError, match=r"last\.ckpt.*refused"):
        load_soft_prompt(tmp_path / "stage1")
    assert not marker.exists()


def test_a_stage1_run_killed_part_way_is_not_used_by_stage2(tmp_path):
    from rdrec.methods.delrec.artifacts import load_soft_prompt

    run = tmp_path / "stage1"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"lm.soft_prompt": torch.ones(4, 3)}}, run / "checkpoints" / "last.ckpt")  # mid-epoch
    with pytest.raises(DataError, match=r"did not finish.*resume="):
        load_soft_prompt(run)
    (run / "metrics.json").write_text("{}")  # what rdrec-train writes when the run ends
    assert load_soft_prompt(run).shape == (4, 3)


def test_trusted_checkpoint_opt_in_is_explicit(tmp_path, monkeypatch):
    from rdrec.utils.checkpoints import load_checkpoint

    marker = tmp_path / "PWNED"
    _crafted_checkpoint(tmp_path / "x.ckpt", marker)
    monkeypatch.setenv("RDREC_TRUST_CHECKPOINTS", "1")
    load_checkpoint(tmp_path / "x.ckpt")
    assert marker.exists()  # what the opt-in means, and why it is not the default


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_gives_one_line_naming_the_file(tmp_path, damage):
    from rdrec.methods.delrec.artifacts import load_soft_prompt

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"lm.soft_prompt": torch.ones(4, 3)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 40, "empty": b""}[damage])
    with pytest.raises(DataError) as err:
        load_soft_prompt(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "\n" not in msg and "weights_only" not in msg


def test_pickled_source_files_need_trust_pickles(tmp_path):
    from rdrec.data.sources.amazon_p5 import AmazonP5
    from rdrec.data.sources.steam import SteamLLaRA

    marker = tmp_path / "PWNED"
    d = tmp_path / "beauty"
    d.mkdir()
    (d / "sequential_data.txt").write_text("1 1 2\n", encoding="utf-8")
    with open(d / "review_splits.pkl", "wb") as f:
        pickle.dump({"train": [Payload(str(marker))]}, f)
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    assert "review_splits.pkl" in str(err.value) and "data.source.trust_pickles=true" in str(err.value)
    s = tmp_path / "steam"
    s.mkdir()
    (s / "id2name.txt").write_text("1::A game\n", encoding="utf-8")
    with open(s / "Test_data.df", "wb") as f:
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(DataError) as err:
        SteamLLaRA(str(s)).load()
    assert "Test_data.df" in str(err.value) and "data.source.trust_pickles=true" in str(err.value)
    assert not marker.exists()


# ---- resume ---------------------------------------------------------------------------------------------------

def test_ckpt_path_last_with_nothing_to_resume_is_one_line_error(tmp_path):
    proc = _train(["data=synthetic", "strategy=pop", "ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}",
                   f"paths.data_dir={tmp_path / 'data'}"], tmp_path)
    assert proc.returncode != 0
    (line,) = _error_lines(proc)
    assert "nothing to resume" in line and str(tmp_path / "logs" / "train" / "runs") in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "logs").exists()  # no run directory was made


def test_resumed_run_must_keep_its_config(tmp_path):
    from hydra import compose, initialize_config_dir

    from rdrec.cli.resume import check_same_config
    from rdrec.utils.resolvers import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved = compose("train", overrides=["data=synthetic"])
        OmegaConf.save(saved, tmp_path / "config.yaml")
        check_same_config(compose("train", overrides=["data=synthetic", "ckpt_path=/x/last.ckpt"]), tmp_path / "config.yaml")
        with pytest.raises(DataError) as err:
            check_same_config(compose("train", overrides=["data=synthetic", "seed=7"]), tmp_path / "config.yaml")
    assert "field 'seed'" in str(err.value) and "expected 42, got 7" in str(err.value)


@pytest.mark.parametrize("damage", ["crafted", "truncated"])
def test_resume_refuses_a_crafted_or_corrupt_last_checkpoint_in_one_line(tmp_path, damage):
    # a run directory whose last.ckpt carries a payload (or is cut short): resuming it runs nothing and says why
    from hydra import compose, initialize_config_dir

    from rdrec.utils.resolvers import CONFIG_DIR

    run, marker = tmp_path / "run", tmp_path / "PWNED"
    overrides = ["data=synthetic", "strategy=pop", f"paths.data_dir={tmp_path / 'data'}"]
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        OmegaConf.save(compose("train", overrides=overrides), run / ".hydra" / "config.yaml")  # as Hydra saves it
    last = run / "checkpoints" / "last.ckpt"
    _crafted_checkpoint(last, marker)
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:300])
    proc = _train([f"resume={run}"], tmp_path)
    assert proc.returncode != 0 and not marker.exists()
    (line,) = _error_lines(proc)
    assert str(last) in line and ("refused" if damage == "crafted" else "truncated or corrupt") in line, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr


TIMINGS = ("train/epoch_seconds", "train/samples_per_s", "train/seconds_per_step", "train/peak_rss_mb")


def logged_rows(run: Path, interrupted_epoch: int | None = None) -> list[dict]:
    """The rows of a run's ``csv/metrics.csv`` less the timing columns, and less the epoch means of training
    metrics for ``interrupted_epoch``: after a resume from a checkpoint inside an epoch they average only the
    batches since the checkpoint (Lightning does not checkpoint an epoch's running means)."""
    def keep(row: dict, key: str) -> bool:
        return key not in TIMINGS and not (key.startswith("train/") and row["epoch"] == str(interrupted_epoch))

    with open(run / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if keep(row, k)} for row in csv.DictReader(f)]


def reference_metrics(args: list[str], tmp_path: Path) -> dict:
    """metrics.json of an uninterrupted ``rdrec-train`` run with ``args`` (in ``<tmp_path>/reference``)."""
    ref = _train([*args, f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return json.loads((tmp_path / "reference" / "metrics.json").read_text())


@pytest.mark.slow
def test_kill_9_at_a_random_batch_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    common = [*TINY, f"paths.data_dir={tmp_path / 'data'}", "+callbacks.kill._target_=tests.test_faults_run.KillAt",
              "callbacks.resume_checkpoints.every_n_train_steps=2"]
    expected = reference_metrics(common, tmp_path)
    # 4 batches per epoch, last.ckpt every 2 steps and after each validation: a random step inside an epoch after
    # the first checkpoint (odd steps redo the step since it), and the first step of an epoch (resumed from the
    # checkpoint written after the previous epoch's validation)
    # resumed with resume=<run dir>, then as rdrec-pipeline does: the same command line plus ckpt_path=last
    rng = random.Random()
    for step, how in ((rng.choice([2, 3, 5, 6, 7, 9, 10, 11]), "resume"), (4 * rng.randint(1, 2), "last")):
        run = tmp_path / f"killed_at_{step}"
        killed = _train([*common, f"hydra.run.dir={run}"], tmp_path, **{KILL_ENV: str(step)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert not (run / "metrics.json").exists()
        again = [f"resume={run}"] if how == "resume" else [*common, f"hydra.run.dir={run}", "ckpt_path=last"]
        resumed = _train(again, tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run / "metrics.json").read_text()) == expected, f"killed at step {step}"
        # it continued in its own directory, from its own best-so-far state, and its own log: each row once
        assert len(list((run / "checkpoints").glob("epoch*.ckpt"))) == 1
        # (its last checkpoint is inside an epoch, at an even step, when the kill came 2 or 3 steps into one)
        interrupted = step // 4 if step % 4 in (2, 3) else None
        assert logged_rows(run, interrupted) == logged_rows(tmp_path / "reference", interrupted), f"killed at {step}"


@pytest.mark.slow
def test_a_run_killed_while_testing_resumes_from_checkpoints_without_adams_moments(tmp_path):
    """What lets experiments/delrec/run.py --archive carry a trained, half-tested stage 2 within the size cap: a
    checkpoint written after the last optimiser step (``training_done``) resumes to the same metrics with each
    optimiser's per-parameter state emptied, from another directory than the one it ran in (an archive unpacked in
    another checkout: Lightning's restored ``best_model_path`` names the old one); a checkpoint from inside training
    is not taken for done."""
    from rdrec.utils.checkpoints import load_checkpoint, training_done, without_optimizer_moments

    common = [*TINY, f"paths.data_dir={tmp_path / 'data'}", "+trainer.limit_val_batches=0",
              "callbacks.model_checkpoint.monitor=null", "callbacks.early_stopping=null",
              "callbacks.resume_checkpoints.every_n_train_steps=2", "+callbacks.kill._target_=tests.test_faults_run.KillAt",
              "+callbacks.kill_test._target_=tests.test_faults_run.KillAtTest"]
    expected = reference_metrics(common, tmp_path)

    mid = tmp_path / "killed_training"
    killed = _train([*common, f"hydra.run.dir={mid}"], tmp_path, **{KILL_ENV: "7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not training_done(load_checkpoint(mid / "checkpoints" / "last.ckpt"), max_epochs=3)

    run = tmp_path / "killed_testing"
    killed = _train([*common, f"hydra.run.dir={run}"], tmp_path, **{KILL_TEST_ENV: "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run / "metrics.json").exists()
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    for path in checkpoints:
        state = load_checkpoint(path)
        assert training_done(state, max_epochs=3) and any(opt["state"] for opt in state["optimizer_states"])
        slim = without_optimizer_moments(state)
        assert [opt["param_groups"] for opt in slim["optimizer_states"]] == \
            [opt["param_groups"] for opt in state["optimizer_states"]]
        assert not any(opt["state"] for opt in slim["optimizer_states"])
        torch.save(slim, path)
    moved = run.rename(tmp_path / "unpacked_elsewhere")
    resumed = _train([f"resume={moved}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((moved / "metrics.json").read_text()) == expected
    assert logged_rows(moved) == logged_rows(tmp_path / "reference")  # the training rows logged before the kill too
