"""Collect run directories (docs/architecture.md) into a paper-style table: runs grouped by their config differences,
seeds pooled into mean ± std, best in bold, a paired t-test against a baseline, and a plot per metric.

A run directory is any directory holding ``metrics.json``; ``.hydra/overrides.yaml`` and ``.hydra/config.yaml``
say how it was configured. A run's *setting* is the overrides that differ between the runs (``strategy=sr
seqrec=gru4rec``); where two runs have the same overrides but different composed configs (another experiment
file, changed defaults) the differing config keys are added. Seeds, paths, loggers and resume points are not
settings: runs that differ only in those are repetitions of one setting.

A ``metrics.json`` must be a JSON object of at least one metric name → number (``null``/NaN allowed for a metric
that could not be computed); anything else stops the aggregation with one line naming the file and key, before
anything is written. The output files are computed in memory first and then written atomically: into a new
directory renamed into place, or file by file (each renamed into place) into an existing one.

Numbers: mean and sample standard deviation (``ddof=1``, as pandas and most papers) over a setting's runs; the
p-value is scipy's two-sided paired t-test (``ttest_rel``) of a setting against its baseline over the seeds both
ran (a seed run twice in one setting counts once, with its runs averaged).
"""

from __future__ import annotations

import io
import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_dir, atomic_write_bytes
from rdrec.utils.report import metric_order, markdown_table

DEFAULT_METRICS = ("test/hr@10", "test/ndcg@10", "test/mrr", "test/sampled/hr@10", "test/sampled/ndcg@10")
# keys that make repetitions or move files, not settings (a key or any key below it)
NOT_SETTINGS = ("seed", "paths", "hydra", "tags", "task_name", "ckpt_path", "logger", "trainer.enable_progress_bar")
LOWER_IS_BETTER = re.compile(r"loss|seconds|time|failure|missing")
DIGITS = 4


# ---- reading runs --------------------------------------------------------------------------------------------
def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: ``run_dir``, ``setting`` (label), ``settings`` (dict key -> value), ``seed``, metrics."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or multirun directory")
    files = sorted({f for p in paths for f in ([p] if p.name == "metrics.json" else p.rglob("metrics.json"))})
    if not files:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, paths))}")
    rows, overrides, configs = [], [], []
    for metrics_file in files:
        run = metrics_file.parent
        metrics = read_metrics(metrics_file)
        ov = _overrides(run)
        cfg = _flat_config(run)
        seed = ov.get("seed", cfg.get("seed"))
        rows.append({"run_dir": str(run), "seed": _number(seed), **metrics})
        overrides.append({k: v for k, v in ov.items() if not _not_setting(k)})
        configs.append({k: v for k, v in cfg.items() if not _not_setting(k)})
    runs = pd.DataFrame(rows)
    runs.insert(1, "settings", _settings(overrides, configs))
    runs.insert(1, "setting", [label(s) for s in runs["settings"]])
    return runs


def read_metrics(path: Path) -> dict[str, float]:
    """A run's ``metrics.json``: an object of metric name → number (null → NaN); ``DataError`` otherwise."""
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(path=path, expected="UTF-8 JSON", got=f"byte {err.object[err.start]:#04x} at offset {err.start}") from None
    except json.JSONDecodeError as err:
        raise DataError(path=path, line=err.lineno, expected="valid JSON", got=err.msg) from None
    if not isinstance(metrics, dict):
        raise DataError(path=path, expected="a JSON object of metric name -> number", got=type(metrics).__name__)
    if not metrics:
        raise DataError(path=path, expected="at least one metric", got="{}")
    out = {}
    for key, value in metrics.items():
        if value is None:
            value = math.nan
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise DataError(path=path, field=key, expected="a number", got=value)
        out[key] = value
    return out


def label(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "(all runs)"


def _overrides(run: Path) -> dict[str, str]:
    file = run / ".hydra" / "overrides.yaml"
    if not file.exists():
        return {}
    out = {}
    for o in OmegaConf.load(file):
        key, sep, value = str(o).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def _flat_config(run: Path) -> dict[str, str]:
    file = run / ".hydra" / "config.yaml"
    if not file.exists():
        return {}
    # unresolved: ${seed} and ${paths.output_dir} stay the same text in every run
    return _flatten(OmegaConf.to_container(OmegaConf.load(file), resolve=False))


def _flatten(node, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else str(node)}


def _not_setting(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)


def _settings(overrides: list[dict], configs: list[dict]) -> list[dict]:
    """The overrides that vary between runs; then, among runs they do not tell apart, the config keys that do."""
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    settings = [{k: o[k] for k in varying if k in o} for o in overrides]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(label(s), []).append(i)
    for members in groups.values():
        cfg_keys = list(dict.fromkeys(k for i in members for k in configs[i]))
        differ = [k for k in cfg_keys if len({configs[i].get(k) for i in members}) > 1 and k not in varying]
        for i in members:
            settings[i].update({k: configs[i].get(k, "(unset)") for k in differ})
    return settings


def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


# ---- the table -----------------------------------------------------------------------------------------------
def select_metrics(runs: pd.DataFrame, patterns: Sequence[str] | None = None) -> list[str]:
    """Metric columns matching the patterns (fnmatch, e.g. ``test/*``), in pattern order; the defaults that
    exist, else every ``test/`` metric, else every metric, when no pattern is given."""
    fixed = {"run_dir", "setting", "settings", "seed"}
    present = [c for c in runs.columns if c not in fixed and pd.api.types.is_numeric_dtype(runs[c])]
    if patterns:
        chosen = [c for p in patterns for c in sorted((c for c in present if fnmatch(c, p)), key=_metric_key)]
        if not chosen:
            raise ValueError(f"no metric matches {list(patterns)}; the runs have: {', '.join(present)}")
        return list(dict.fromkeys(chosen))
    return [m for m in DEFAULT_METRICS if m in present] or [c for c in present if c.startswith("test/")] or present


def _metric_key(name: str):
    """Protocol first, then HR, NDCG, MRR by increasing K: test/hr@5 before test/hr@10."""
    prefix, _, metric = name.rpartition("/")
    return prefix, metric_order(metric)


def parse_setting(text: str) -> dict[str, str]:
    """``"strategy=pop data=ml100k"`` -> {"strategy": "pop", "data": "ml100k"}."""
    pairs = [t.partition("=") for t in text.split()]
    bad = [a for a, sep, _ in pairs if not sep]
    if bad:
        raise ValueError(f"baseline '{text}': expected key=value pairs, got {bad}")
    return {k.lstrip("+~"): v for k, _, v in pairs}


def summarize(runs: pd.DataFrame, metrics: Sequence[str], baseline: str | None = None,
              within: Sequence[str] = ()) -> pd.DataFrame:
    """One row per setting: its keys as columns, ``runs``, ``seeds``, and per metric ``<m>:mean``, ``<m>:std``
    (ddof=1), ``<m>:n`` and, with a baseline, ``<m>:p`` (paired t-test against the baseline setting that has the
    same values of every other key, e.g. the same dataset) and ``<m>:best`` (best mean, after rounding to the
    printed digits, among the rows with the same values of the ``within`` keys)."""
    from scipy.stats import ttest_rel

    groups = list(runs.groupby("setting", sort=False))
    settings = {name: g["settings"].iloc[0] for name, g in groups}
    keys = list(dict.fromkeys(k for s in settings.values() for k in s))
    rows = []
    for name, g in groups:
        row = {"setting": name, **{k: settings[name].get(k) for k in keys}, "runs": len(g),
               "seeds": " ".join(str(s) for s in sorted(set(g["seed"].dropna()), key=str))}
        for m in metrics:
            values = g[m].dropna() if m in g else pd.Series(dtype=float)
            row[f"{m}:mean"] = values.mean() if len(values) else math.nan
            row[f"{m}:std"] = values.std(ddof=1) if len(values) > 1 else math.nan
            row[f"{m}:n"] = len(values)
        rows.append(row)
    table = pd.DataFrame(rows)
    if baseline:
        base_of = _baselines(settings, parse_setting(baseline) if "=" in baseline else None, baseline)
        for m in metrics:
            table[f"{m}:p"] = [_paired_p(runs, name, base_of.get(name), m, ttest_rel) for name in table["setting"]]
        table["baseline"] = [base_of.get(name, "") for name in table["setting"]]
    for m in metrics:
        table[f"{m}:best"] = _best(table, m, [k for k in within if k in table.columns])
    return table


def _baselines(settings: dict[str, dict], spec: dict | None, text: str) -> dict[str, str]:
    """Each setting's baseline: the setting equal to it with the baseline's keys substituted; if there is none,
    the one setting matching the baseline's keys (or label) when exactly one does."""
    if spec is None:  # an exact label such as "(all runs)"
        return {name: text for name in settings} if text in settings else {}
    by_items = {tuple(sorted(s.items())): name for name, s in settings.items()}
    matching = [name for name, s in settings.items() if all(s.get(k) == v for k, v in spec.items())]
    if not matching:
        raise ValueError(f"baseline '{text}' matches no setting; settings are: {'; '.join(settings)}")
    out = {}
    for name, s in settings.items():
        target = by_items.get(tuple(sorted({**s, **spec}.items())))
        out[name] = target or (matching[0] if len(matching) == 1 else "")
    return out


def _paired_p(runs: pd.DataFrame, name: str, base: str | None, metric: str, ttest_rel) -> float:
    if not base or base == name or metric not in runs:
        return math.nan
    a = runs[runs["setting"] == name].groupby("seed")[metric].mean()
    b = runs[runs["setting"] == base].groupby("seed")[metric].mean()
    pairs = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(pairs) < 2:
        return math.nan
    return float(ttest_rel(pairs.iloc[:, 0], pairs.iloc[:, 1]).pvalue)


def _best(table: pd.DataFrame, metric: str, within: list[str]) -> list[bool]:
    means = table[f"{metric}:mean"].round(DIGITS)
    sign = -1 if LOWER_IS_BETTER.search(metric) else 1
    blocks = table[within].apply(_text).agg("|".join, axis=1) if within else pd.Series("", index=table.index)
    best = (sign * means).groupby(blocks).transform("max")
    return list((sign * means == best) & means.notna() & (table["runs"] > 0))


def format_cell(mean: float, std: float, p: float = math.nan, best: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    text = f"{mean:.{DIGITS}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{DIGITS}f}")
    if best:
        text = f"**{text}**"
    if p is not None and not math.isnan(p):
        text += f" (p{format_p(p)})"
    return text


def format_p(p: float) -> str:
    """``=0.012`` or ``<0.001``."""
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def markdown(summary: pd.DataFrame, metrics: Sequence[str]) -> str:
    """The paper-style table: ``mean ± std``, the best of each column in bold, ``(p=…)`` against the baseline."""
    has_p = any(f"{m}:p" in summary for m in metrics)
    rows = []
    for _, r in summary.iterrows():
        cells = [format_cell(r[f"{m}:mean"], r[f"{m}:std"], r.get(f"{m}:p", math.nan), bool(r[f"{m}:best"]))
                 for m in metrics]
        rows.append([r["setting"], str(r["runs"]), *cells])
    table = markdown_table(["setting", "runs", *metrics], rows)
    notes = ["mean ± sample std (ddof=1) over seeds; best per column in bold"]
    if has_p:
        bases = sorted({b for b in summary.get("baseline", []) if b})
        notes.append(f"p: two-sided paired t-test by seed against {', '.join(bases) or 'the baseline'}")
    return table + "\n\n" + "; ".join(notes) + "."


def write_csv(summary: pd.DataFrame, path: str | Path) -> None:
    atomic_write_bytes(path, csv_bytes(summary))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def read_csv(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True, dtype={"setting": str, "seeds": str})


# ---- the plot ------------------------------------------------------------------------------------------------
def plot(summary: pd.DataFrame, metrics: Sequence[str], path: str | Path, x: str | None = None) -> int:
    """One panel per metric: mean ± std against the ablation key ``x`` (default: the key with the most
    values), one line per combination of the other keys. Numeric settings get a numeric axis. Returns the
    number of points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in summary.columns if k not in _summary_fixed(summary)]
    if x is not None and x not in keys:
        raise ValueError(f"--x {x}: not a setting key; keys are {keys or ['(none: all runs share one setting)']}")
    x = x or (max(keys, key=lambda k: summary[k].nunique(dropna=False)) if keys else None)
    others = [k for k in keys if k != x]
    xs = _text(summary[x]) if x else pd.Series(["all runs"] * len(summary))
    numeric = x is not None and pd.to_numeric(summary[x], errors="coerce").notna().all()
    order = sorted(set(xs), key=float) if numeric else list(dict.fromkeys(xs))
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    lines = summary.groupby([_text(summary[k]) for k in others], sort=False) if others else [("", summary)]
    points = 0
    for ax, m in zip(axes.flat, metrics):
        for name, g in lines:
            gx = _text(g[x]) if x else pd.Series(["all runs"] * len(g), index=g.index)
            pos = [float(v) if numeric else order.index(v) for v in gx]
            idx = np.argsort(pos)
            err = g[f"{m}:std"].fillna(0).to_numpy()[idx]
            lab = label(dict(zip(others, name if isinstance(name, tuple) else (name,)))) if others else None
            ax.errorbar(np.asarray(pos)[idx], g[f"{m}:mean"].to_numpy()[idx], yerr=err, marker="o", capsize=3,
                        label=lab, linestyle="-" if numeric else "none")
            points += int(g[f"{m}:mean"].notna().sum())
        if not numeric:  # categories: points with error bars, no lines between unrelated settings
            ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel(x or "")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if others:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    named = isinstance(path, (str, Path))
    buffer = io.BytesIO() if named else path  # else: a binary file object
    fig.savefig(buffer, dpi=110, format=(Path(path).suffix.lstrip(".") or "png") if named else "png")
    plt.close(fig)
    if named:
        atomic_write_bytes(path, buffer.getvalue())
    return points


def _text(values: pd.Series) -> pd.Series:
    """Setting values as text, a key a run did not set as "(unset)" (pandas keeps NaN through astype(str))."""
    return values.map(lambda v: "(unset)" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def _summary_fixed(summary: pd.DataFrame) -> set[str]:
    return {c for c in summary.columns if ":" in c} | {"setting", "runs", "seeds", "baseline"}


def declared_options(runs: pd.DataFrame) -> dict:
    """The table options a sweep config declared for its multirun (``hydra.callbacks.print_table``: baseline,
    within, x, metrics), read from the first run that recorded them in ``.hydra/hydra.yaml``."""
    for run in runs["run_dir"]:
        file = Path(run) / ".hydra" / "hydra.yaml"
        if file.exists():
            node = OmegaConf.select(OmegaConf.load(file), "hydra.callbacks.print_table", default=None)
            if node is not None:
                options = OmegaConf.to_container(node, resolve=False)
                return {k: options[k] for k in ("baseline", "within", "x", "metrics") if options.get(k)}
    return {}


# ---- everything at once (the CLI and the multirun callback) ---------------------------------------------------
def aggregate(dirs: Sequence[str | Path], out: str | Path | None = None, metrics: Sequence[str] | None = None,
              baseline: str | None = None, within: Sequence[str] = (), x: str | None = None,
              plot_file: bool = True) -> str:
    """Load, summarise and (with ``out``) write ``table.md``, ``summary.csv``, ``runs.csv``, ``metrics.png``.
    Returns the Markdown table."""
    runs = load_runs(dirs)
    declared = declared_options(runs)
    baseline = declared.get("baseline") if baseline is None else baseline
    within = within or declared.get("within") or ()
    x = x or declared.get("x")
    chosen = select_metrics(runs, metrics or declared.get("metrics"))
    summary = summarize(runs, chosen, baseline=baseline, within=within)
    table = markdown(summary, chosen)
    if out is not None:
        # everything is computed before anything is written: a failure leaves no partial output
        files = {"table.md": (table + "\n").encode("utf-8"), "summary.csv": csv_bytes(summary),
                 "runs.csv": csv_bytes(runs.drop(columns="settings"))}
        if plot_file:
            buffer = io.BytesIO()
            plot(summary, chosen, buffer, x=x)
            files["metrics.png"] = buffer.getvalue()
        write_outputs(Path(out), files)
    return table


def write_outputs(out: Path, files: dict[str, bytes]) -> None:
    """A new ``out`` appears whole (a staging dir renamed into place); into an existing one (which may hold other
    files) each file is renamed into place."""
    if not out.exists():
        with atomic_dir(out) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        return
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
