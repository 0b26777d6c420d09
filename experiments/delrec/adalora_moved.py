"""Did stage 2 move AdaLoRA? The singular values (``lora_E``) of a finished stage-2 run's last checkpoint: how many
the budget schedule kept (non-zero) and their size. They start at exactly 0, so 0 everywhere means no change.
(The run's latest ``epoch*.ckpt``, else ``last.ckpt``: the same weights at the end of a finished run without
validation; an archived finished run keeps only the former.)

    python experiments/delrec/adalora_moved.py experiments/delrec/work/study/seed1/delrec [...]
"""

import sys
from pathlib import Path

import torch

from rdrec.methods.delrec.sr_model import best_checkpoint
from rdrec.utils.checkpoints import load_checkpoint

for run in map(Path, sys.argv[1:]):
    state = load_checkpoint(best_checkpoint(run))
    values = torch.cat([v.flatten() for k, v in state["state_dict"].items() if "lora_E" in k])
    if not len(values):
        sys.exit(f"{run}: no AdaLoRA singular values (lora_E) in its checkpoint")
    kept = values[values != 0].abs()
    print(f"{run}: step {state.get('global_step')}, {len(kept)} of {len(values)} singular values kept, "
          f"mean |E| {values.abs().mean():.4f} (kept: {kept.mean():.4f}), max {values.abs().max():.4f}")
