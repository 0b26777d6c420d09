"""Write a fine-tuned language model as a plain Hugging Face directory (loadable by ``from_pretrained`` and so by
the generation backends: ``rdrec-generate teacher=transformers teacher.backend.model=<dir>``).

``SaveBackbone`` runs after fitting: it takes the weights of the best checkpoint (or the last weights when no
checkpoint was kept), asks the module for its merged model (``merged_model()``, e.g. LoRA adapters merged
into the base weights) and writes it with the module's tokenizer into ``dirpath``, atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl

from rdrec.utils.atomic import atomic_dir
from rdrec.utils.checkpoints import best_model_path, load_checkpoint

log = logging.getLogger(__name__)


class SaveBackbone(pl.Callback):
    def __init__(self, dirpath: str, use_best: bool = True):
        self.dirpath, self.use_best = Path(dirpath), use_best

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        best = best_model_path(trainer) if self.use_best else ""
        current = None
        if best:
            state = load_checkpoint(best)["state_dict"]
            current = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if k in state}
            pl_module.load_state_dict(state, strict=False)
        try:
            model = pl_module.merged_model()
        finally:
            if current is not None:  # the module goes on with its own (last) weights
                pl_module.load_state_dict(current, strict=False)
        write_model(self.dirpath, model, pl_module.tokenizer, {
            "base": getattr(pl_module, "backbone_name", ""), "checkpoint": best or "last weights",
            "epoch": trainer.current_epoch, "global_step": trainer.global_step})
        print(f"saved the fine-tuned model ({'best checkpoint' if best else 'last weights'}) to {self.dirpath}", flush=True)


def write_model(dirpath: str | Path, model, tokenizer, source: dict) -> None:
    """``model`` and ``tokenizer`` as a Hugging Face directory at ``dirpath``, whole or not at all, with
    ``SOURCE.json`` = ``source`` (where the weights came from)."""
    with atomic_dir(dirpath) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
