"""rdrec-aggregate <run or multirun dirs…>: print (and optionally write) the comparison table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rdrec.aggregate import DEFAULT_METRICS, load_runs, summary_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dirs", nargs="+", help="run or multirun directories (searched recursively)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) and the runs (CSV) here")
    args = parser.parse_args(argv)
    runs = load_runs(args.dirs)
    table = summary_table(runs, args.metrics)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(table + "\n")
        runs.to_csv(args.out / "runs.csv", index=False)


if __name__ == "__main__":
    main()
