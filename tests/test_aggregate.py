"""rdrec-aggregate on hand-made run directories: grouping, mean ± std (ddof=1), paired t-test p-values against
scipy, bold best, CSV/Markdown round trip, the plot file, and the CLI's errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import ttest_rel

from rdrec.aggregate import aggregate, load_runs, markdown, plot, read_csv, select_metrics, summarize
from rdrec.cli.aggregate import main as cli


def make_run(root: Path, name: str, overrides: list[str], metrics: dict, config: dict | None = None,
             print_table: dict | None = None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 0)
    cfg = {"seed": seed, "paths": {"output_dir": str(run)}, "trainer": {"max_epochs": 20},
           "data": {"split": {"seed": "${seed}"}}, **(config or {})}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if print_table is not None:
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"callbacks": {"print_table": print_table}}}))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


# seeds deliberately listed in a different order per setting: pairing must go by seed, not by position
POP = {1: 0.10, 2: 0.25, 3: 0.30}
SR = {3: 0.40, 1: 0.20, 2: 0.30}


@pytest.fixture
def sweep(tmp_path) -> Path:
    n = 0
    for strategy, values in (("pop", POP), ("sr", SR)):
        for seed, v in values.items():
            make_run(tmp_path / "multirun", str(n), [f"strategy={strategy}", f"seed={seed}"],
                     {"test/hr@10": v, "test/ndcg@10": v / 2, "train/loss": 1 - v, "val/ndcg@10": v})
            n += 1
    return tmp_path / "multirun"


def test_runs_grouped_by_overrides_with_seeds_pooled(sweep):
    runs = load_runs([sweep])
    assert len(runs) == 6
    assert sorted(runs["setting"].unique()) == ["strategy=pop", "strategy=sr"]
    assert sorted(runs.loc[runs["setting"] == "strategy=sr", "seed"]) == [1, 2, 3]


def test_mean_and_sample_std(sweep):
    runs = load_runs([sweep])
    summary = summarize(runs, ["test/hr@10"]).set_index("setting")
    sr = np.array(list(SR.values()))
    assert summary.loc["strategy=sr", "test/hr@10:mean"] == pytest.approx(sr.mean())
    assert summary.loc["strategy=sr", "test/hr@10:std"] == pytest.approx(sr.std(ddof=1))  # sample std, ddof=1
    assert summary.loc["strategy=sr", "runs"] == 3 and summary.loc["strategy=sr", "seeds"] == "1 2 3"


def test_paired_t_test_by_seed_matches_scipy_and_a_hand_computed_value(sweep):
    summary = summarize(load_runs([sweep]), ["test/hr@10"], baseline="strategy=pop").set_index("setting")
    a = [SR[s] for s in (1, 2, 3)]
    b = [POP[s] for s in (1, 2, 3)]
    expected = ttest_rel(a, b).pvalue
    # differences 0.10, 0.05, 0.10: t = 0.0833 / (0.02887 / sqrt 3) = 5.0 with 2 df -> two-sided p = 0.0377
    assert expected == pytest.approx(0.03775, abs=2e-4)
    assert summary.loc["strategy=sr", "test/hr@10:p"] == pytest.approx(expected)
    assert np.isnan(summary.loc["strategy=pop", "test/hr@10:p"])  # the baseline itself
    assert summary.loc["strategy=sr", "baseline"] == "strategy=pop"
    # pairing by position (the order the runs were written) would give another p
    assert ttest_rel(list(SR.values()), list(POP.values())).pvalue != pytest.approx(expected)


def test_baseline_is_paired_within_the_same_other_settings(tmp_path):
    rng = np.random.default_rng(0)
    values = {}
    n = 0
    for data in ("a", "b"):
        for strategy in ("x", "y"):
            for seed in (1, 2, 3, 4):
                v = float(rng.uniform())
                values[data, strategy, seed] = v
                make_run(tmp_path, str(n), [f"data={data}", f"strategy={strategy}", f"seed={seed}"], {"test/hr@10": v})
                n += 1
    summary = summarize(load_runs([tmp_path]), ["test/hr@10"], baseline="strategy=x", within=["data"]).set_index("setting")
    for data in ("a", "b"):
        p = ttest_rel([values[data, "y", s] for s in (1, 2, 3, 4)], [values[data, "x", s] for s in (1, 2, 3, 4)]).pvalue
        assert summary.loc[f"data={data} strategy=y", "test/hr@10:p"] == pytest.approx(p)
        assert summary.loc[f"data={data} strategy=y", "baseline"] == f"data={data} strategy=x"
    # best is marked within each dataset: exactly one bold row per dataset
    assert summary.groupby("data")["test/hr@10:best"].sum().tolist() == [1, 1]


def test_unknown_baseline_is_an_error_naming_the_settings(sweep):
    with pytest.raises(ValueError, match=r"matches no setting.*strategy=pop"):
        summarize(load_runs([sweep]), ["test/hr@10"], baseline="strategy=nope")


def test_best_in_bold_higher_or_lower_is_better(sweep):
    runs = load_runs([sweep])
    summary = summarize(runs, ["test/hr@10", "train/loss"], baseline="strategy=pop")
    md = markdown(summary, ["test/hr@10", "train/loss"])
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| strategy=")}
    sr_mean, pop_loss = np.mean(list(SR.values())), 1 - np.mean(list(SR.values()))
    assert f"**{sr_mean:.4f} ± " in rows["strategy=sr"]  # higher HR is better
    assert f"**{pop_loss:.4f} ± " in rows["strategy=sr"]  # and lower loss: sr has the lower loss
    assert rows["strategy=pop"].count("**") == 0
    assert "(p=0.038)" in rows["strategy=sr"]


def test_ties_after_rounding_are_all_bold(tmp_path):
    make_run(tmp_path, "0", ["strategy=a"], {"test/hr@10": 0.123449})
    make_run(tmp_path, "1", ["strategy=b"], {"test/hr@10": 0.12341})
    summary = summarize(load_runs([tmp_path]), ["test/hr@10"])
    assert summary["test/hr@10:best"].tolist() == [True, True]


def test_config_differences_split_runs_with_equal_overrides(tmp_path):
    # same overrides (only seeds), but one pair of runs composed with another max_epochs: two settings;
    # differing paths and seeds (also ${seed} interpolations) do not split
    for i, (seed, epochs) in enumerate([(1, 20), (2, 20), (1, 5), (2, 5)]):
        make_run(tmp_path, str(i), [f"seed={seed}"], {"test/hr@10": 0.1 * (i + 1)}, {"trainer": {"max_epochs": epochs}})
    runs = load_runs([tmp_path])
    assert sorted(runs["setting"].unique()) == ["trainer.max_epochs=20", "trainer.max_epochs=5"]
    one = load_runs([tmp_path / "0", tmp_path / "1"])
    assert one["setting"].unique().tolist() == ["(all runs)"]


def test_csv_and_markdown_round_trip(sweep, tmp_path):
    out = tmp_path / "agg"
    table = aggregate([sweep], out=out, metrics=["test/*"], baseline="strategy=pop")
    assert (out / "table.md").read_text().strip() == table.strip()
    summary = summarize(load_runs([sweep]), ["test/hr@10", "test/ndcg@10"], baseline="strategy=pop")
    back = read_csv(out / "summary.csv")
    assert list(back.columns) == list(summary.columns)
    pd.testing.assert_frame_equal(back.drop(columns=["seeds"]), summary.drop(columns=["seeds"]), check_dtype=False)
    # every Markdown cell reads back as the CSV's mean ± std at the printed precision
    for line in table.splitlines():
        if not line.startswith("| strategy="):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = back.set_index("setting").loc[cells[0]]
        for metric, cell in zip(["test/hr@10", "test/ndcg@10"], cells[2:]):
            mean, std = map(float, re.match(r"\**([\d.]+) ± ([\d.]+)", cell).groups())
            assert mean == pytest.approx(row[f"{metric}:mean"], abs=5e-5)
            assert std == pytest.approx(row[f"{metric}:std"], abs=5e-5)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs["seed"]) == {1, 2, 3}


def test_plot_written_with_a_numeric_ablation_axis(tmp_path):
    n = 0
    for lr in ("0.1", "0.01", "0.001"):
        for seed in (1, 2):
            make_run(tmp_path / "m", str(n), [f"strategy.lr={lr}", f"seed={seed}"], {"test/hr@10": float(lr) + seed / 100})
            n += 1
    aggregate([tmp_path / "m"], out=tmp_path / "agg")
    png = (tmp_path / "agg" / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with pytest.raises(ValueError, match="not a setting key"):
        aggregate([tmp_path / "m"], out=tmp_path / "agg2", x="nope")


def test_plot_draws_every_setting_also_when_some_keys_are_unset(sweep, tmp_path):
    make_run(tmp_path / "other", "0", ["strategy=pop", "data=x", "seed=1"], {"test/hr@10": 0.1, "test/ndcg@10": 0.05})
    make_run(tmp_path / "other", "1", ["strategy=sr", "data=x", "seed=1"], {"test/hr@10": 0.2, "test/ndcg@10": 0.1})
    summary = summarize(load_runs([sweep, tmp_path / "other"]), ["test/hr@10", "test/ndcg@10"])
    assert len(summary) == 4  # data unset in the first sweep's runs
    assert plot(summary, ["test/hr@10", "test/ndcg@10"], tmp_path / "p.png", x="strategy") == 8


def test_metric_selection_patterns(sweep):
    runs = load_runs([sweep])
    assert select_metrics(runs) == ["test/hr@10", "test/ndcg@10"]
    assert select_metrics(runs, ["val/*", "test/hr@10"]) == ["val/ndcg@10", "test/hr@10"]
    with pytest.raises(ValueError, match="no metric matches"):
        select_metrics(runs, ["nope/*"])


def test_cli_uses_the_baseline_the_sweep_declared(tmp_path, capsys):
    for i, (strategy, seed, v) in enumerate([("pop", 1, 0.1), ("pop", 2, 0.2), ("pop", 3, 0.25),
                                             ("sr", 1, 0.3), ("sr", 2, 0.35), ("sr", 3, 0.5)]):
        make_run(tmp_path / "m", str(i), [f"strategy={strategy}", f"seed={seed}"], {"test/hr@10": v},
                 print_table={"baseline": "strategy=pop"})
    cli([str(tmp_path / "m")])
    out = capsys.readouterr().out
    p = ttest_rel([0.3, 0.35, 0.5], [0.1, 0.2, 0.25]).pvalue
    assert f"(p={p:.3f})" in out and "± " in out and "paired t-test by seed against strategy=pop" in out
    assert (tmp_path / "m" / "aggregate" / "metrics.png").exists()


def test_cli_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no such run or multirun directory"):
        cli([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metrics.json"):
        cli([str(tmp_path / "empty")])
    make_run(tmp_path / "bad", "0", [], {})
    (tmp_path / "bad" / "0" / "metrics.json").write_text("{oops")
    with pytest.raises(SystemExit, match=r"metrics.json:1: expected valid JSON"):
        cli([str(tmp_path / "bad")])
