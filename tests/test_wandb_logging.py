"""logger=wandb in a multirun: offline run directories holding the metrics, grouped by sweep, tagged by strategy
and dataset, with per-epoch validation curves, the final metrics in the summary and a samples table."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rdrec.wandb_logging import wandb_group, wandb_tags
from tests.conftest import compose_cfg, run_cli


def _wait_for(run_file_dir: Path, patterns: dict[str, bytes], timeout: float = 120) -> list[str]:
    """wandb's service process writes the run file; it can lag behind the job's exit on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        record = next(run_file_dir.glob("run-*.wandb")).read_bytes()
        missing = [k for k, p in patterns.items() if not re.search(p, record, re.DOTALL)]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1)


@pytest.mark.slow
def test_multirun_with_wandb_groups_tags_metrics_curves_and_samples(tmp_path):
    run_cli("rdrec-train", ["-m", "data=synthetic", "strategy=pop,sr", "seed=1", "trainer.max_epochs=2", "logger=wandb",
                            "trainer.enable_progress_bar=false", f"paths.data_dir={tmp_path / 'data'}",
                            f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    for job, strategy in (("0", "pop"), ("1", "sr")):
        run_dir = sweep / job
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        patterns = {
            "group": re.escape(f"train/{sweep.name}".encode()),
            "strategy tag": re.escape(f"strategy:{strategy}".encode()),
            "data tag": re.escape(b"data:synthetic"),
            "per-epoch axis": re.escape(b"val/*"),
            # the summary holds metrics.json's float64 values exactly (the history has Lightning's float32 copies)
            **{f"summary {k}": re.escape(k.encode()) + b".{1,16}" + re.escape(json.dumps(metrics[k]).encode())
               for k in ("test/hr@10", "test/sampled/ndcg@10", "val/ndcg@10")},
        }
        missing = _wait_for(offline, patterns)
        assert not missing, f"{job}: not in the offline run file: {missing}"
        if strategy == "sr":  # one validation point per epoch (2 epochs), besides the final validate
            record = next(offline.glob("run-*.wandb")).read_bytes()
            values = set(re.findall(rb"val/ndcg@10\x82\x01.([0-9][0-9.e-]*)", record, re.DOTALL))
            assert len(values) >= 2, values
        (table_file,) = (offline / "files" / "media" / "table" / "test").glob("samples_*.table.json")
        table = json.loads(table_file.read_text())
        assert table["columns"][:3] == ["user", "history (last 5)", "target"] and len(table["data"]) == 20
        if strategy == "sr":  # (popularity has tied scores: top-k order among ties is arbitrary, ranks pessimistic)
            assert all(row[4] == (row[3] <= 10) for row in table["data"])  # agrees with the evaluator's ranks


def test_group_is_the_sweep_for_multirun_jobs_only(tmp_path):
    sweep = tmp_path / "logs" / "sweep_x" / "multiruns" / "2026-01-01_00-00-00"
    assert wandb_group(str(sweep / "3"), "sweep_x") == "sweep_x/2026-01-01_00-00-00"
    other = tmp_path / "elsewhere"
    (other).mkdir()
    (other / "multirun.yaml").write_text("{}")  # any launcher's sweep dir (Hydra writes multirun.yaml there)
    assert wandb_group(str(other / "0"), "t") == "t/elsewhere"
    assert wandb_group(str(tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00"), "train") is None


def test_tags_without_hydra_runtime_fall_back_to_class_names(tmp_path):
    cfg = compose_cfg("train", tmp_path, ["data=synthetic", "strategy=pop", "logger=wandb", "tags=[mine]"])
    assert OmegaConf.to_container(cfg.logger.wandb, resolve=True)["tags"] == ["mine", "strategy:popularitymodule",
                                                                             "data:synthetic"]
    assert cfg.callbacks.wandb_samples._target_ == "rdrec.wandb_logging.WandbSamples"
    assert wandb_tags(["a", "strategy:x"], cfg)[:2] == ["a", "strategy:x"]
