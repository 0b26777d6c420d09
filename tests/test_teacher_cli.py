"""rdrec-generate end to end with a tiny model: store + export + metrics, kill -9 and resume, DDP sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rdrec.teacher.export import load
from rdrec.teacher.store import RationaleStore
from tests.conftest import BIN, compose_cfg
from tests.test_teacher_fixtures import tiny_lm  # noqa: F401


def generate_cmd(args: list[str]) -> list[str]:
    script = BIN / "rdrec-generate"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "rdrec.cli.generate", *args]


def base_args(tmp_path: Path, model: Path, store: str = "store", run: str = "run", users: int = 12) -> list[str]:
    return ["data=synthetic", "teacher=transformers", f"teacher.backend.model={model}", "teacher.backend.model_id=tiny",
            "teacher.params.max_new_tokens=24", "teacher.batch_size=3", f"subset.users={users}",
            "subset.interactions_per_user=2", f"paths.data_dir={tmp_path / 'data'}", f"store_dir={tmp_path / store}",
            f"hydra.run.dir={tmp_path / run}", "seed=7"]


def run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(generate_cmd(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def content(store_dir: Path) -> dict:
    """key -> record without what legitimately differs between two runs (wall-clock time, writer rank)."""
    out = {}
    for r in RationaleStore(store_dir).reload().records():
        r = json.loads(json.dumps(r))
        r["provenance"].pop("created_at"), r["provenance"].pop("rank"), r.pop("checksum")
        out[r["key"]] = r
    return out


def physical_keys(store_dir: Path) -> list[str]:
    return [json.loads(line)["key"] for seg in RationaleStore(store_dir).segment_files() for line in seg.read_text().splitlines()]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_lm) -> Path:
    """One uninterrupted single-process run (36 prompts in 12 batches): the reference for the tests below."""
    tmp = tmp_path_factory.mktemp("clean")
    run(base_args(tmp, tiny_lm), tmp)
    return tmp


@pytest.mark.slow
def test_generate_end_to_end(clean_run):
    metrics = json.loads((clean_run / "run" / "metrics.json").read_text())
    assert metrics["generate/prompts"] == 36 and metrics["generate/stored"] == 36  # 12 users x 2 + 12 SLIM users
    assert metrics["generate/rdrec/entries"] == 24 and metrics["generate/slim/entries"] == 12
    assert 0 < metrics["generate/failure_rate"] < 1 and metrics["generate/run/tokens_per_s"] > 0
    tables = load(clean_run / "run" / "rationales")
    assert len(tables["rdrec_interactions"]) + len(tables["slim_users"]) + len(tables["failures"]) == 36
    assert len(tables["failures"]) == metrics["generate/failed"]
    assert (clean_run / "run" / ".hydra" / "config.yaml").is_file()
    record = next(RationaleStore(clean_run / "store" / "synthetic").reload().records())
    assert record["provenance"]["model_id"] == "tiny" and record["provenance"]["backend"] == "transformers"
    assert record["provenance"]["params"]["max_new_tokens"] == 24 and record["provenance"]["template_hash"]


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_store(tmp_path, tiny_lm, clean_run):
    clean = content(clean_run / "store" / "synthetic")
    args = base_args(tmp_path, tiny_lm, store="killed", run="killed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(generate_cmd(args), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    segments = tmp_path / "killed" / "synthetic" / "segments"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(segments.glob("*.jsonl"))) < 3 and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = RationaleStore(tmp_path / "killed" / "synthetic").reload()
    assert 0 < len(partial) < 36 and not partial.corrupt, "the kill must land mid-run"

    out = run(args[:-2] + [f"hydra.run.dir={tmp_path / 'resumed'}", "seed=7"], tmp_path).stdout
    assert f"{len(partial)} already in" in out and f"{36 - len(partial)} to generate" in out
    resumed = content(tmp_path / "killed" / "synthetic")
    keys = physical_keys(tmp_path / "killed" / "synthetic")
    assert len(keys) == len(set(keys)) == 36  # every key exactly once, also on disk
    assert resumed == clean  # the same text, seeds, attempts and provenance as the uninterrupted run


@pytest.mark.slow
def test_ddp_cpu_generates_each_prompt_exactly_once(tmp_path, tiny_lm, clean_run):
    run(base_args(tmp_path, tiny_lm, store="ddp", run="ddp") + ["trainer=ddp_cpu"], tmp_path)
    store_dir = tmp_path / "ddp" / "synthetic"
    keys = physical_keys(store_dir)
    assert len(keys) == len(set(keys)) == 36
    ranks = [r["provenance"]["rank"] for r in RationaleStore(store_dir).reload().records()]
    assert set(ranks) == {0, 1} and abs(ranks.count(0) - ranks.count(1)) <= 3  # split across both processes
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["generate/run/generated"] == 36 and metrics["generate/run/world_size"] == 2
    # the same content as one process: sharding changes who generates, not what
    assert content(store_dir) == content(clean_run / "store" / "synthetic")


@pytest.mark.parametrize("teacher", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "teacher").glob("*.yaml")))
def test_every_teacher_config_composes_and_names_real_classes(tmp_path, teacher):
    from hydra.utils import get_class, instantiate

    cfg = compose_cfg("generate", tmp_path, [f"teacher={teacher}", "teacher.backend.model=some-model"])
    assert get_class(cfg.teacher.backend._target_).name in ("transformers", "openai", "vllm")
    assert instantiate(cfg.teacher.params).max_new_tokens > 0 and instantiate(cfg.teacher.retry).max_retries >= 0
    assert cfg.teacher.batch_size >= 1 and set(cfg.families) == {"rdrec", "slim"}
