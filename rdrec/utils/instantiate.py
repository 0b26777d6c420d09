"""Build lists of objects (callbacks, loggers) from config groups whose entries each carry a `_target_`."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_list(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]
