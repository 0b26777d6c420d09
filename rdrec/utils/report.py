"""metrics.json (docs/architecture.md), the table printed at the end of a run, and Markdown tables in general."""

from __future__ import annotations

import json
from pathlib import Path

from rdrec.utils.atomic import atomic_write_text
from rdrec.utils.rundir import check_owner


def write_metrics(path: str | Path, metrics: dict[str, float]) -> None:
    """Write ``metrics.json`` atomically, refusing (``RunDirError``) when another run owns the directory."""
    path = Path(path)
    check_owner(path.parent)
    atomic_write_text(path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")


def metrics_table(metrics: dict[str, float], stage: str = "test") -> str:
    """Markdown table: one row per protocol (`full` for keys `test/<metric>`), one column per metric."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[0] != stage:
            continue
        protocol = "full" if len(parts) == 2 else "/".join(parts[1:-1])
        rows.setdefault(protocol, {})[parts[-1]] = value
    if not rows:
        return f"(no {stage} metrics)"
    columns = sorted({c for r in rows.values() for c in r}, key=metric_order)
    body = [[protocol, *(f"{row[c]:.4f}" if c in row else "" for c in columns)] for protocol, row in rows.items()]
    return markdown_table(["protocol", *columns], body)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` inside a cell is escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def metric_order(name: str):
    base, _, k = name.partition("@")
    return ({"hr": 0, "ndcg": 1, "mrr": 2}.get(base, 3), int(k) if k.isdigit() else 0, name)
