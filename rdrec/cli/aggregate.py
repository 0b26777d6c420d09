"""rdrec-aggregate <run or multirun dirs…>: the comparison table of their runs (mean ± std over seeds, best in
bold, paired t-test p-values against a baseline), written with a CSV and a plot per metric.

Examples:
  rdrec-aggregate logs/train/multiruns/2026-11-22_10-00-00
  rdrec-aggregate logs/train/multiruns/* --baseline strategy=pop --within data --x strategy --metrics 'test/*@10'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rdrec.aggregate import aggregate
from rdrec.errors import DataError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories (searched recursively)")
    parser.add_argument("--metrics", nargs="+", help="metric names or patterns (default: HR@10, NDCG@10, MRR, "
                        "sampled HR@10 / NDCG@10 when present)")
    parser.add_argument("--baseline", help="the setting to test against, e.g. 'strategy=pop': each setting is "
                        "paired with the baseline that has its other keys (same dataset, …)")
    parser.add_argument("--within", nargs="+", default=[], metavar="KEY",
                        help="mark the best per column within groups of these keys (e.g. data)")
    parser.add_argument("--x", help="the ablation key on the plot's x axis (default: the key with most values)")
    parser.add_argument("--out", type=Path, help="where table.md, summary.csv, runs.csv and metrics.png go "
                        "(default: <first dir>/aggregate)")
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    out = None if args.no_write else (args.out or args.dirs[0] / "aggregate")
    try:
        table = aggregate(args.dirs, out=out, metrics=args.metrics, baseline=args.baseline, within=args.within, x=args.x)
    except (FileNotFoundError, ValueError, DataError) as err:
        sys.exit(f"rdrec-aggregate: error: {err}")
    print(table)
    if out is not None:
        print(f"\nwritten: {out}/table.md, summary.csv, runs.csv, metrics.png")


if __name__ == "__main__":
    main()
