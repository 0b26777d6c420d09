"""Did stage 2 move AdaLoRA? The singular values (``lora_E``) of a finished stage-2 run's last checkpoint: how many
the budget schedule kept (non-zero) and their size. They start at exactly 0, so 0 everywhere means no change.
(``checkpoints/last.ckpt``, else the run's latest ``epoch*.ckpt``: an archived finished run keeps only the latter.)

    python experiments/delrec/adalora_moved.py experiments/delrec/work/study/seed1/delrec [...]
"""

import sys
from pathlib import Path

import torch

from rdrec.utils.checkpoints import load_checkpoint

for run in map(Path, sys.argv[1:]):
    found = sorted((run / "checkpoints").glob("epoch*.ckpt"))
    ckpt = run / "checkpoints" / "last.ckpt"
    state = load_checkpoint(ckpt if ckpt.is_file() or not found else found[-1])
    values = torch.cat([v.flatten() for k, v in state["state_dict"].items() if "lora_E" in k])
    if not len(values):
        sys.exit(f"{run}: no AdaLoRA singular values (lora_E) in its checkpoint")
    kept = values[values != 0].abs()
    print(f"{run}: step {state.get('global_step')}, {len(kept)} of {len(values)} singular values kept, "
          f"mean |E| {values.abs().mean():.4f} (kept: {kept.mean():.4f}), max {values.abs().max():.4f}")
