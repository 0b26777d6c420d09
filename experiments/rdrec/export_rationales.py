"""Export whatever RDRec rationales the store holds for one prepared split, while (or after) `rdrec-generate` runs.

`rdrec-generate` exports its own entries when it finishes; generating one rationale per training interaction of
ml-100k takes hours on this CPU, so the CPU experiment trains on the subset stored so far. This script selects
the store's successful RDRec entries of the split's dataset fingerprint and writes the same tables
(rdrec.teacher.export) atomically.

    python experiments/rdrec/export_rationales.py --data ml100k --out data/rationales/exports/ml100k-rdrec-latest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rdrec.data.pipeline import prepare_dataset
from rdrec.teacher.export import export
from rdrec.teacher.store import RationaleStore
from rdrec.utils.resolvers import CONFIG_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="ml100k", help="data config name (conf/data/<name>.yaml)")
    ap.add_argument("--seed", type=int, default=42, help="split seed the rationales were generated for")
    ap.add_argument("--store", default=None, help="rationale store root (default: <data_dir>/rationales)")
    ap.add_argument("--out", required=True, help="export directory (meta.json + tables/)")
    args = ap.parse_args(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[f"data={args.data}", f"seed={args.seed}"])
    prepared = prepare_dataset(instantiate(cfg.data.source), instantiate(cfg.data.split), cfg.data.cache_dir)
    store = RationaleStore(Path(args.store or cfg.store_dir) / prepared.name, create=False)
    records = [r for r in store.records() if r.get("family") == "rdrec" and r.get("fingerprint") == prepared.fingerprint]
    counts = export(records, args.out, meta={"dataset": prepared.name, "fingerprint": prepared.fingerprint,
                                             "store": str(store.path), "source": "experiments/rdrec/export_rationales.py"})
    print(f"{len(records)} RDRec entries of {prepared.name} ({prepared.fingerprint[:12]}) → {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
