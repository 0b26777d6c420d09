"""Throughput of the RDRec/POD student on CPU: training samples/s and decoding users/s.

Builds the datamodule and student exactly as `rdrec-train` does from an experiment config, then times
`--train-batches` optimizer steps on the task mixture, and the two scorers of the shared evaluator on
`--users` test users: constrained beam search over all items (`score_all`) and exact log-likelihood of the
101-item sampled candidate lists (`score_candidates`). Writes a JSON file (append-only list of runs).

    python experiments/rdrec/throughput.py experiment=rdrec_ml100k_cpu --out experiments/rdrec/results/throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rdrec.utils.resolvers import CONFIG_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=rdrec_ml100k_cpu")
    ap.add_argument("--train-batches", type=int, default=20)
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--out", default="experiments/rdrec/results/throughput.json")
    args = ap.parse_args(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(args.overrides))
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    module = instantiate(cfg.strategy, num_items=dm.num_items, num_users=dm.num_users,
                         protocols=instantiate(cfg.eval.protocols), ks=list(cfg.eval.ks), mrr_k=cfg.eval.mrr_k)
    module.build(dm.tokenizer, dm.item_tokens())
    params = sum(p.numel() for p in module.parameters())
    optimizer = module.optimizer_factory(params=module.parameters())

    # training: optimizer steps on the task mixture (data loading included, the first batch is warm-up)
    module.train()
    loader = iter(dm.train_dataloader())
    samples, seconds, tokens = 0, 0.0, 0
    for step in range(args.train_batches + 1):
        start = time.perf_counter()
        batch = next(loader)
        loss = module.model(batch["input_ids"], batch["attention_mask"], batch["whole_word_ids"], batch["task"], batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # skip warm-up
            seconds += time.perf_counter() - start
            samples += len(batch["task"])
            tokens += int(batch["attention_mask"].sum())
        print(f"\rtrain step {step}/{args.train_batches} loss {float(loss):.3f}", end="", file=sys.stderr)
    print(file=sys.stderr)

    # decoding: the shared evaluator's two scorers on test users
    module.eval()
    full_s = cand_s = 0.0
    users = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            t0 = time.perf_counter()
            module.score_all(batch)
            t1 = time.perf_counter()
            module.score_candidates(batch, batch["sampled_candidates"])
            t2 = time.perf_counter()
            full_s, cand_s, users = full_s + t1 - t0, cand_s + t2 - t1, users + len(batch["user"])
            print(f"\rdecoded {users} users", end="", file=sys.stderr)
            if users >= args.users:
                break
    print(file=sys.stderr)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "overrides": list(args.overrides),
        "command": "python experiments/rdrec/throughput.py " + " ".join(args.overrides),
        "parameters": params, "vocab": len(dm.tokenizer), "batch_size": cfg.data.batch_size,
        "train_samples_per_s": samples / seconds, "train_source_tokens_per_s": tokens / seconds,
        "train_batches": args.train_batches, "num_beams": module.num_beams,
        "decode_full_users_per_s": users / full_s, "score_sampled101_users_per_s": users / cand_s, "users": users,
        "torch_threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0], "cpu": platform.processor(),
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else []
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs + [result], indent=1) + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
