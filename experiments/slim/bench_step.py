"""Seconds per SLIM student training step (forward + backward), before and after projecting the vocabulary only
at the labelled positions, in one process on the same inputs (old and new interleaved, so load changes hit both
alike):

    RDREC_DATA_DIR=data taskset -c 1 env OMP_NUM_THREADS=1 python experiments/slim/bench_step.py --backbone smollm2
    RDREC_DATA_DIR=data taskset -c 1 env OMP_NUM_THREADS=1 python experiments/slim/bench_step.py --backbone gemma3_270m

Before: the model's full forward (logits at every position) and the NLL of the rationale tokens from them. After:
``SlimStudentModule.forward`` (``rdrec.backbones.heads.labelled_nll``: the same loss, logits only where a label
is). Inputs: the student of ``conf/strategy/slim_student.yaml`` (LoRA r = 8 on the architecture's default
projections) on the named shipped backbone, batches of 4 (prompt → teacher rationale) pairs from the teacher's
full-window export (``experiments/slim/run.py export-teacher``), max length 512. Writes
results/bench_step_<backbone>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from rdrec.backbones.heads import IGNORE
from rdrec.methods.slim.student_module import SlimStudentModule, encode_pairs
from rdrec.teacher.export import load_checked

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RDREC_DATA_DIR", HERE.parents[1] / "data")).resolve()


def old_loss(module: SlimStudentModule, batch: dict) -> torch.Tensor:
    """The loss as computed before: full-vocabulary logits at every position, then the labelled positions' NLL."""
    enc = encode_pairs(module.tokenizer, batch["prompt"], batch["target"], module.max_length)
    logits = module.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), enc["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)


def new_loss(module: SlimStudentModule, batch: dict) -> torch.Tensor:
    return module(batch)[0]


def timed_step(loss_fn, module, batch) -> tuple[float, float]:
    module.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = loss_fn(module, batch)
    loss.backward()
    return time.perf_counter() - t0, float(loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", choices=["smollm2", "gemma3_270m"], default="smollm2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--export", default=str(DATA / "rationales" / "exports" / "ml100k" / "slim_teacher"))
    args = ap.parse_args()
    from rdrec.backbones import causal

    backbone = getattr(causal, args.backbone)(str(DATA))
    module = SlimStudentModule(backbone, optimizer=None, lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0})
    meta = json.loads((Path(args.export) / "meta.json").read_text())
    table = load_checked(args.export, meta["fingerprint"])[0]["slim_users"]
    rows = sorted(((int(r["user"]), r["student_prompt"], r["rationale"]) for r in table if r["rationale"]))
    batches = [{"prompt": [p for _, p, _ in rows[i:i + args.batch_size]],
                "target": [t for _, _, t in rows[i:i + args.batch_size]]}
               for i in range(0, args.reps * args.batch_size, args.batch_size)]
    timed_step(new_loss, module, batches[0])  # warm-up (allocator, first-call overheads)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for batch in batches:
        enc = encode_pairs(module.tokenizer, batch["prompt"], batch["target"], module.max_length)
        for name, fn in (("before", old_loss), ("after", new_loss)):
            seconds, loss = timed_step(fn, module, batch)
            times[name].append(seconds)
            print(f"{name}: {seconds:.2f} s (loss {loss:.4f}; {tuple(enc['input_ids'].shape)} tokens, "
                  f"{int((enc['labels'][:, 1:] != IGNORE).sum())} labelled)", flush=True)
    result = {"backbone": backbone.name, "vocab": int(module.model.config.vocab_size), "batch_size": args.batch_size,
              "reps": args.reps, "seconds": times,
              "median_before": statistics.median(times["before"]), "median_after": statistics.median(times["after"]),
              "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    result["after_over_before"] = result["median_after"] / result["median_before"]
    out = HERE / "results" / f"bench_step_{args.backbone}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{backbone.name}: median {result['median_before']:.2f} s → {result['median_after']:.2f} s per step "
          f"(× {result['after_over_before']:.2f}) → {out}")


if __name__ == "__main__":
    main()
