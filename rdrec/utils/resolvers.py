"""OmegaConf resolvers the configs use; imported by every entry point before Hydra composes."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

ROOT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT_DIR / "conf"


def wandb_offline() -> bool:
    """Offline unless the user has logged in; WANDB_MODE forces either way."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def register() -> None:
    OmegaConf.register_new_resolver("rdrec_root", lambda: str(ROOT_DIR), replace=True)
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    # the run directory's suffix (conf/hydra/default.yaml): unique among the processes running at one instant
    # (cached: a multirun's jobs copy the cache of the sweep they belong to)
    OmegaConf.register_new_resolver("rdrec_pid", os.getpid, replace=True, use_cache=True)


register()
