"""Check that rdrec's ml-100k split does not depend on the seed (runs in the project venv).

RecBole reads the export made with the default seed (42); rdrec's runs use seeds 1, 2, 3, which only change
the random id remapping. For each seed this exports the csv tables and compares, by ORIGINAL MovieLens ids,
every interaction's (user, item, timestamp, position in the user's sequence, split) with the seed-42
export. Writes results/split_check.json and exits non-zero on any difference.

    .venv/bin/python experiments/sr_benchmark/check_split.py --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COLS = ["user_id", "item_id", "timestamp", "position", "split"]


def export(seed: int | None, out: Path) -> pd.DataFrame:
    if not (out / "csv" / "interactions.csv").exists():
        cmd = [str(REPO / ".venv" / "bin" / "rdrec-data"), "data=ml100k", "action=export", f"export.dir={out}",
               "export.formats=[csv]"] + ([f"seed={seed}"] if seed is not None else [])
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    frame = pd.read_csv(out / "csv" / "interactions.csv")
    return frame[COLS].sort_values(["user_id", "position"]).reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--reference", type=Path, default=HERE / "work" / "export")
    args = ap.parse_args()
    ref = export(None, args.reference)
    report = {"reference": "work/export (rdrec-data default seed 42; the files RecBole reads)",
              "interactions": len(ref), "users": int(ref["user_id"].nunique()),
              "items": int(ref["item_id"].nunique()),
              "split_sizes": ref["split"].value_counts().to_dict(), "seeds": {}}
    ok = True
    for seed in args.seeds:
        other = export(seed, HERE / "work" / f"export_seed{seed}")
        same = other.equals(ref)
        ok &= same
        # the remapping itself does change with the seed (sanity check that the seed was applied)
        remapped = pd.read_csv(HERE / "work" / f"export_seed{seed}" / "csv" / "interactions.csv")
        ref_full = pd.read_csv(args.reference / "csv" / "interactions.csv")
        report["seeds"][seed] = {"identical_by_original_ids": bool(same),
                                 "item_remapping_differs_from_seed42": bool(
                                     not remapped.set_index(["user_id", "item_id", "timestamp"])["item"].sort_index().equals(
                                         ref_full.set_index(["user_id", "item_id", "timestamp"])["item"].sort_index()))}
    report["all_identical"] = bool(ok)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "split_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
