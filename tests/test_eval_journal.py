"""Evaluation that resumes after a kill (rdrec/eval/journal.py, rdrec.callbacks.EvalJournal): a pass reads back the
ranks a killed pass over the same weights computed and scores only the rest; other weights start afresh."""

from __future__ import annotations

import json
import signal

import pytest
import pytorch_lightning as pl
import torch

from rdrec.eval import CandidateRanking
from rdrec.eval.journal import ScoreJournal, weights_fingerprint
from rdrec.modules.base import RecModule
from tests.test_faults_run import TINY, _train, reference_metrics


def _meta(**kw):
    return {"stage": "test", "global_step": 3, "weights": "abc", "protocols": {"sampled": "x"}, **kw}


def test_journal_reads_back_what_was_put_and_ignores_a_torn_last_line(tmp_path):
    j = ScoreJournal(tmp_path / "j", _meta())
    j.put("sampled", torch.tensor([4, 2]), torch.tensor([1, 7]))
    j.put("sampled", torch.tensor([9]), torch.tensor([3]))
    j.close()
    with open(tmp_path / "j" / "rank0.jsonl", "a") as f:
        f.write('{"protocol": "sampled", "users": [5, 6], "ra')  # what a kill mid-write leaves
    again = ScoreJournal(tmp_path / "j", _meta())
    assert len(again) == 2 and again.num_users == 3
    assert again.get("sampled", torch.tensor([4, 2])).tolist() == [1, 7]
    assert again.get("sampled", torch.tensor([2, 4])) is None  # a batch is its users in order
    assert again.get("full", torch.tensor([4, 2])) is None
    assert again.get("sampled", torch.tensor([5, 6])) is None


def test_journal_of_other_weights_or_step_is_cleared(tmp_path):
    j = ScoreJournal(tmp_path / "j", _meta())
    j.put("sampled", torch.tensor([1]), torch.tensor([2]))
    j.close()
    assert len(ScoreJournal(tmp_path / "j", _meta(weights="abd"))) == 0
    assert not (tmp_path / "j" / "rank0.jsonl").exists()
    j = ScoreJournal(tmp_path / "j", _meta(weights="abd"))
    j.put("sampled", torch.tensor([1]), torch.tensor([2]))
    j.close()
    assert len(ScoreJournal(tmp_path / "j", _meta(weights="abd", global_step=4))) == 0


def test_fingerprint_changes_with_any_weight_and_not_with_thread_count():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    before = weights_fingerprint(net)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert weights_fingerprint(net) == before
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        net[0].weight[3, 5] += 1e-4
    assert weights_fingerprint(net) != before


class Listed(RecModule):
    """Scores a fixed table; counts the users it scored; fails at the ``fail_at``-th batch (a kill)."""

    def __init__(self, fail_at=None):
        super().__init__({"sampled": CandidateRanking("sampled")}, ks=(1, 5))
        self.table = torch.nn.Parameter(torch.linspace(1, 0, 50), requires_grad=False)
        self.fail_at, self.batches, self.scored = fail_at, 0, []

    def score_candidates(self, batch, candidates):
        self.batches += 1
        if self.fail_at is not None and self.batches == self.fail_at:
            raise RuntimeError("killed")
        self.scored += batch["user"].tolist()
        return self.table[candidates]


class Users(pl.LightningDataModule):
    def test_dataloader(self):
        g = torch.Generator().manual_seed(0)
        rows = [{"user": torch.tensor(u), "sampled_candidates": torch.randperm(50, generator=g)[:10],
                 "sampled_target_index": torch.tensor(u % 10)} for u in range(1, 41)]
        return torch.utils.data.DataLoader(rows, batch_size=8)


def _test(module, tmp_path):
    from rdrec.callbacks import EvalJournal

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         callbacks=[EvalJournal(str(tmp_path / "eval_journal"))])
    trainer.test(module, datamodule=Users())
    return module.eval_results


def test_a_killed_test_pass_resumes_with_the_users_it_had_not_reached(tmp_path):
    expected = _test(Listed(), tmp_path / "reference")
    with pytest.raises(RuntimeError):
        _test(Listed(fail_at=4), tmp_path)  # 3 of 5 batches ranked, then killed
    assert (tmp_path / "eval_journal" / "test" / "rank0.jsonl").is_file()
    resumed = Listed()
    assert _test(resumed, tmp_path) == expected
    assert sorted(resumed.scored) == list(range(25, 41))  # only the batches the killed pass had not ranked
    assert not (tmp_path / "eval_journal").exists()  # removed once the test pass finished
    other = Listed()  # other weights: nothing is reused
    with pytest.raises(RuntimeError):
        _test(Listed(fail_at=3), tmp_path)
    with torch.no_grad():
        other.table[0] += 1.0
    _test(other, tmp_path)
    assert sorted(other.scored) == list(range(1, 41))


@pytest.mark.slow
def test_rdrec_train_killed_while_testing_resumes_and_matches_the_uninterrupted_run(tmp_path):
    common = [*TINY, f"paths.data_dir={tmp_path / 'data'}", "data.eval_batch_size=16",
              "+callbacks.kill._target_=tests.test_eval_journal.KillAtTestBatch"]
    expected = reference_metrics(common, tmp_path)
    run = tmp_path / "killed"
    killed = _train([*common, f"hydra.run.dir={run}"], tmp_path, RDREC_TEST_KILL_AT_TEST_BATCH="5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (run / "eval_journal" / "test" / "rank0.jsonl").is_file()
    resumed = _train([f"resume={run}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test: 80 users already ranked" in resumed.stderr + resumed.stdout
    assert json.loads((run / "metrics.json").read_text()) == expected
    assert not (run / "eval_journal").exists()


class KillAtTestBatch(pl.Callback):
    """kill -9 of its own process before test batch number ``$RDREC_TEST_KILL_AT_TEST_BATCH`` (inactive unset)."""

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        import os

        at = os.environ.get("RDREC_TEST_KILL_AT_TEST_BATCH")
        if at and batch_idx == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
