"""Learning-rate sweep on the planted-rule probe (``rdrec.methods.delrec.probe``) with SmolLM2-135M-Instruct: how far
each stage gets in a CPU-length run, per learning rate.

    RDREC_DATA_DIR=data taskset -c 1 env OMP_NUM_THREADS=1 \\
        python experiments/delrec/probe_sweep.py --stage 2 --lrs 5e-4 5e-3 --steps 30

Stage 2: ``DelRecModule`` with the strategy config's AdaLoRA options (schedule sized to ``--steps``), a frozen random
20-token soft prompt, batch 4, K candidates (the positive, the history's other franchises, then unseen ones);
HR@1 on held-out planted examples. Stage 1: ``DelRecStage1Module`` on RPS prompts of the planted SR model (it ranks its
favourite franchise first); RPS HR@1 on held-out lists before and after. Each line printed is one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from rdrec.backbones.causal import pretrained
from rdrec.methods.delrec.datamodule import PromptExamples
from rdrec.methods.delrec.module import DelRecModule
from rdrec.methods.delrec.probe import PlantedRule, hit_rate_at_1
from rdrec.methods.delrec.stage1 import DelRecStage1Module
from rdrec.utils.resolvers import CONFIG_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, choices=(1, 2), default=2)
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 5e-3])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RDREC_DATA_DIR", "data")))
    args = parser.parse_args()
    rule = PlantedRule(history=5, k=args.k)
    adalora = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "strategy" / "delrec.yaml").strategy.adalora)
    for lr in args.lrs:
        backbone = pretrained(args.data_dir / "models" / "smollm2-135m-instruct", name="smollm2")
        optimizer = lambda params, lr=lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # noqa: E731
        if args.stage == 2:
            module = DelRecModule(backbone=backbone, protocols={}, optimizer=optimizer, adalora=adalora, num_soft_tokens=20)
            rows = [{"prompt": e["prompt"], "target": e["target"]} for e in rule.rec_examples(args.steps * args.batch_size, 1)]
            held_out, task = rule.rec_examples(args.held_out, 2), "rec"
        else:
            module = DelRecStage1Module(backbone=backbone, protocols={}, optimizer=optimizer, tasks=["rps"], num_soft_tokens=20)
            rows = [{"rps_prompt": e["rps_prompt"], "rps_target": e["rps_target"]}
                    for e in rule.rps_examples(args.steps * args.batch_size, 1)]
            held_out, task = rule.rps_examples(args.held_out, 2), "rps"
        module.use_prompts(rule.prompts)
        before = hit_rate_at_1(module, held_out, task) if args.stage == 1 else None
        torch.manual_seed(0)
        loader = DataLoader(PromptExamples(rows), batch_size=args.batch_size, shuffle=True, collate_fn=PromptExamples.collate)
        start = time.perf_counter()
        pl.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(module, loader)
        seconds = time.perf_counter() - start
        after = hit_rate_at_1(module, held_out, task)
        extra = f"before {before:.2f} " if before is not None else ""
        if args.stage == 2:
            e = [p.detach().abs().mean().item() for n, p in module.named_parameters() if "lora_E" in n]
            extra += f"mean |lora_E| {sum(e) / len(e):.4f} "
        print(f"stage {args.stage} lr {lr:g} steps {args.steps} batch {args.batch_size} K {args.k}: {extra}"
              f"held-out HR@1 {after:.2f} (chance {1 / args.k:.2f}; {args.held_out} examples); "
              f"{seconds / args.steps:.1f} s/step", flush=True)


if __name__ == "__main__":
    main()
