"""Collect run directories (DESIGN §3) into one table: runs grouped by the overrides that differ between them.

A run directory is any directory holding ``metrics.json``; its ``.hydra/overrides.yaml`` says how it was
configured. Seeds are pooled into mean ± std.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

DEFAULT_METRICS = ("test/hr@10", "test/ndcg@10", "test/mrr", "test/sampled/hr@10", "test/sampled/ndcg@10")
POOLED = ("seed",)  # overrides that make repetitions, not settings


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: ``run_dir``, ``setting`` (the overrides that differ between runs, seeds excluded),
    ``seed`` and every metric."""
    rows = []
    for metrics_file in sorted({f for p in paths for f in Path(p).rglob("metrics.json")}):
        run = metrics_file.parent
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        rows.append({"run_dir": str(run), "overrides": dict(o.split("=", 1) for o in overrides if "=" in o),
                     **json.loads(metrics_file.read_text())})
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, paths))}")
    runs = pd.DataFrame(rows)
    keys = sorted({k for o in runs["overrides"] for k in o} - set(POOLED))
    varying = [k for k in keys if len({o.get(k) for o in runs["overrides"]}) > 1]
    runs["setting"] = [" ".join(f"{k}={o[k]}" for k in varying if k in o) or "(all runs)" for o in runs["overrides"]]
    runs["seed"] = [o.get("seed") for o in runs["overrides"]]
    return runs.drop(columns="overrides")


def summary_table(runs: pd.DataFrame, metrics: Iterable[str] = DEFAULT_METRICS) -> str:
    """Markdown: one row per setting, mean ± std over its runs (std omitted for a single run)."""
    metrics = [m for m in metrics if m in runs.columns]
    lines = ["| setting | runs | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for setting, group in runs.groupby("setting", sort=False):
        cells = []
        for m in metrics:
            values = group[m].dropna()
            cells.append("" if values.empty else f"{values.mean():.4f}" + (f" ± {values.std():.4f}" if len(values) > 1 else ""))
        lines.append(f"| {setting} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
