"""Shared fixtures: Hydra-composed configs with every path in a temp dir, and the real ml-100k files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from rdrec.utils.resolvers import CONFIG_DIR, ROOT_DIR

SHARED_DATA = ROOT_DIR.parent / "shared" / "data"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def ml100k_root() -> Path:
    """Raw ml-100k files, fetched once into the project's data dir (like `make run`); skipped offline."""
    from rdrec.errors import DataError
    from rdrec.data.sources.movielens import MovieLens100K

    root = Path(os.environ.get("RDREC_DATA_DIR", ROOT_DIR / "data")) / "raw"
    try:
        MovieLens100K(root=str(root)).files()
    except DataError as err:
        pytest.skip(f"ml-100k unavailable: {err}")
    return root


@pytest.fixture(autouse=True)
def _no_leftover_hydra_config():
    """A test that sets Hydra's global HydraConfig (as a real job does) must not leak it into the next test:
    resolvers such as the wandb tags read it."""
    yield
    HydraConfig.instance().cfg = None


def compose_cfg(config_name: str, tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[
                f"paths.data_dir={tmp_path / 'data'}",
                f"paths.log_dir={tmp_path / 'logs'}",
                f"paths.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )
    return cfg


def run_cli(name: str, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a console script of this venv; fail with its output when it fails."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
