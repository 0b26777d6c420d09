"""Read DELRec's stage-1 result: the distilled soft prompt inside a stage-1 run's Lightning checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from rdrec.errors import DataError
from rdrec.utils.checkpoints import load_checkpoint

KEY = "lm.soft_prompt"


def load_soft_prompt(path: str | Path | None) -> torch.Tensor:
    """The [N, H] soft prompt of a finished stage-1 run directory (its ``checkpoints/last.ckpt``; a run killed
    part-way, with no ``metrics.json`` yet, is refused) or of a checkpoint file."""
    if not path:
        raise DataError("stage 2 needs the stage-1 run: set delrec.stage1_run=<run dir of strategy=delrec_stage1> "
                        "(or strategy.soft_prompt=null for the ablation without stage 1)", field="delrec.stage1_run")
    path = Path(path)
    ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise DataError("no stage-1 checkpoint: run `rdrec-train strategy=delrec_stage1` first", path=ckpt)
    saved = load_checkpoint(ckpt)  # plain data only: a checkpoint in a directory the user names cannot run code
    state = saved.get("state_dict", {}) if isinstance(saved, dict) else {}
    if KEY not in state:
        raise DataError("checkpoint holds no DELRec soft prompt", path=ckpt, field="state_dict", expected=KEY,
                        got=", ".join(sorted(state)[:5]) or "nothing")
    if path.is_dir() and not (path / "metrics.json").is_file():  # last.ckpt is also saved during epochs
        raise DataError("the stage-1 run did not finish (no metrics.json beside its checkpoints): continue it with "
                        f"`rdrec-train resume={path}` first", path=path)
    return state[KEY].detach().clone()
