"""How varied a student's beams are: reads the saved test beams (``<run>/topk/test.parquet``) of run directories.

    python experiments/rdrec/beam_stats.py experiments/rdrec/work/compare/main/pod/seed3 experiments/rdrec/work/compare/main/rdrec/seed3

A student that reads the user's history decodes different lists for different users; a collapsed one emits the same
few items for everyone.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pandas as pd


def beam_stats(run_dir: str | Path) -> dict:
    beams = pd.read_parquet(Path(run_dir) / "topk" / "test.parquet")
    firsts = Counter(int(items[0]) for items in beams["items"] if len(items))
    every = Counter(int(i) for items in beams["items"] for i in items)
    return {"users": len(beams), "distinct_items_in_beams": len(every), "distinct_first_items": len(firsts),
            "most_common_first": firsts.most_common(3), "most_common_items": [i for i, _ in every.most_common(10)],
            "mean_beams_per_user": round(float(beams["items"].map(len).mean()), 1)}


if __name__ == "__main__":
    for run in sys.argv[1:]:
        print(run, beam_stats(run))
