"""Loggers from config: wandb offline (no login) and tensorboard write their run files with the metrics."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from rdrec.cli.train import train
from tests.conftest import compose_cfg


@pytest.mark.slow
def test_wandb_offline_run_dir_holds_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg("train", tmp_path, ["data=synthetic", "strategy=pop", "logger=wandb", "trainer.enable_progress_bar=false"])
    assert cfg.logger.wandb.offline is True
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # The run file is a protobuf log; each logged metric is stored as its key followed by its JSON value.
    # Lightning logs float32 tensors, so compare with the float32 value as wandb serialises it.
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    patterns = {key: re.escape(key.encode()) + b".{1,16}" + re.escape(json.dumps(float(np.float32(metrics[key]))).encode())
                for key in ("val/ndcg@10", "test/hr@10", "test/sampled/mrr")}
    # wandb's service process writes the file; on a loaded machine it can lag behind wandb.finish() returning
    deadline = time.monotonic() + 120
    while True:
        record = next(runs[0].glob("run-*.wandb")).read_bytes()
        missing = [k for k, p in patterns.items() if not re.search(p, record, re.DOTALL)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"not in the offline run file: {missing}"


def test_tensorboard_writes_event_files(tmp_path):
    cfg = compose_cfg("train", tmp_path, ["data=synthetic", "strategy=pop", "logger=tensorboard", "trainer.enable_progress_bar=false"])
    train(cfg)
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    # TensorBoard tags may not contain "@": they read test/hr_10
    assert events and any(b"test/hr_10" in e.read_bytes() for e in events)
