"""rdrec-pipeline: stages run once, a second run skips them, a changed config reruns only that stage (and the stages
that need it), killed stages rerun, and the plan is checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rdrec.pipeline import DONE, plan_stages, report, run_pipeline
from rdrec.utils.resolvers import CONFIG_DIR

FAST = ["data=synthetic"]


def pipeline(tmp_path: Path, overrides: list[str] = (), dry_run: bool = False):
    """Compose conf/pipeline.yaml with only the data and pop stages, on synthetic data, everything in tmp_path;
    run it and return (stages, cfg)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=[
            f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", "common=[" + ",".join(f"'{o}'" for o in FAST) + "]",
            "only=[pop]", "stages.pop.overrides=['strategy=pop','trainer.enable_progress_bar=false']", f"dry_run={str(dry_run).lower()}", *overrides])
        return run_pipeline(cfg), cfg


def statuses(stages) -> dict[str, str]:
    return {s.name: s.status for s in stages}


@pytest.mark.slow
def test_second_run_is_cached_and_a_changed_stage_reruns_alone(tmp_path, capsys):
    first, cfg = pipeline(tmp_path)
    assert statuses(first) == {"data": "ran", "pop": "ran"}
    for s in first:
        record = json.loads((s.dir / DONE).read_text())
        assert record["fingerprint"] == s.fingerprint and record["stage"] == s.name
    assert (first[1].dir / "metrics.json").exists() and (first[1].dir / ".hydra" / "overrides.yaml").exists()

    second, _ = pipeline(tmp_path)
    assert statuses(second) == {"data": "cached", "pop": "cached"}
    assert [s.dir for s in second] == [s.dir for s in first]

    # a different evaluation cut-off for pop only: pop reruns in a new directory, data stays cached
    third, cfg = pipeline(tmp_path, ["+stages.pop.set.eval.ks=[1,10]"])
    assert statuses(third) == {"data": "cached", "pop": "ran"}
    assert third[1].dir != first[1].dir and third[0].dir == first[0].dir
    metrics = json.loads((third[1].dir / "metrics.json").read_text())
    assert "test/hr@10" in metrics and "test/hr@5" not in metrics

    table = report(third, cfg)
    assert "| pop | 1 |" in table and "| data | 42 | cached |" in table and "stages run now: 1" in table


def test_finished_stages_are_skipped_killed_and_forced_ones_rerun(tmp_path):
    planned, _ = pipeline(tmp_path, dry_run=True)
    for s in planned:  # as if both had finished
        s.dir.mkdir(parents=True)
        (s.dir / DONE).write_text(json.dumps({"stage": s.name, "seconds": 1.0, "finished": "earlier"}))
    assert statuses(pipeline(tmp_path, dry_run=True)[0]) == {"data": "cached", "pop": "cached"}
    (planned[1].dir / DONE).unlink()  # pop was killed before it finished
    assert statuses(pipeline(tmp_path, dry_run=True)[0]) == {"data": "cached", "pop": "to run"}
    assert statuses(pipeline(tmp_path, ["force=[data]"], dry_run=True)[0]) == {"data": "to run", "pop": "to run"}


def test_fingerprints_follow_configs_and_needed_stages(tmp_path):
    base, _ = pipeline(tmp_path, dry_run=True)
    assert statuses(base) == {"data": "to run", "pop": "to run"}
    same, _ = pipeline(tmp_path, dry_run=True)
    assert [s.fingerprint for s in same] == [s.fingerprint for s in base]
    # a change in the data stage changes pop's fingerprint too (pop needs data) ...
    changed, _ = pipeline(tmp_path, ["+stages.data.set.data.split.min_user_interactions=4"], dry_run=True)
    assert changed[0].fingerprint != base[0].fingerprint and changed[1].fingerprint != base[1].fingerprint
    # ... and a stage may name an earlier stage's directory
    linked, _ = pipeline(tmp_path, ["stages.pop.overrides=['strategy=pop','+upstream=${stage_dir:data}']"], dry_run=True)
    assert linked[1].overrides[-2] == f"+upstream={base[0].dir}"
    # the run directory itself is not part of the fingerprint; the seed is
    seeds, _ = pipeline(tmp_path, ["seeds=[42,7]"], dry_run=True)
    assert seeds[0].fingerprint == base[0].fingerprint and seeds[2].fingerprint != base[0].fingerprint


def test_plan_checks_stage_names_and_needs(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline")
        assert plan_stages(cfg) == ["data", "pop", "sasrec", "generate", "rdrec"]  # slim, delrec: declared, off
        assert plan_stages(compose("pipeline", ["only=[pop]"])) == ["data", "pop"]
        with pytest.raises(SystemExit, match=r"'delrec' needs 'delrec_stage1', which is disabled"):
            plan_stages(compose("pipeline", ["stages.delrec.enabled=true"]))
        both = ["stages.delrec.enabled=true", "stages.delrec_stage1.enabled=true"]
        assert plan_stages(compose("pipeline", [*both, "only=[delrec]"])) == ["data", "sasrec", "delrec_stage1", "delrec"]
        with pytest.raises(SystemExit, match="no stage 'nope'"):
            plan_stages(compose("pipeline", ["only=[nope]"]))
        with pytest.raises(SystemExit, match=r"'pop' needs 'data', which is disabled"):
            plan_stages(compose("pipeline", ["stages.data.enabled=false"]))
        with pytest.raises(SystemExit, match="comes after it"):
            plan_stages(compose("pipeline", ["stages.data.needs=[pop]", "only=[data]"]))


def test_every_declared_stage_composes_with_the_directories_it_reads(tmp_path):
    """The disabled stages too: their overrides must stay valid as the configs evolve."""
    names = ["slim", "delrec_stage1", "delrec"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", [f"paths.log_dir={tmp_path}", "dry_run=true", *(f"stages.{n}.enabled=true" for n in names)])
        stages = {s.name: s for s in run_pipeline(cfg)}
    assert list(stages) == ["data", "pop", "sasrec", "generate", "rdrec", *names]
    assert f"data.rationales={stages['generate'].dir}/rationales" in stages["rdrec"].overrides
    assert f"delrec.stage1_run={stages['delrec_stage1'].dir}" in stages["delrec"].overrides
    assert all(len(s.fingerprint) == 16 for s in stages.values())


def test_report_labels_each_row_with_its_own_stage_whatever_the_directory_order(tmp_path):
    from rdrec.pipeline import Stage

    stages = []
    for name, hr in (("zeta", 0.1), ("alpha", 0.9), ("mid", 0.5)):  # stage order differs from path order
        run = tmp_path / name / "fp"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"test/hr@10": hr}))
        stages.append(Stage(name, "train", 42, [], [], fingerprint="fp", dir=run, status="ran"))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pipeline", ["table.metrics=[test/hr@10]", "table.baseline=zeta"])
    rows = [line for line in report(stages, cfg).splitlines() if line.startswith(("| zeta", "| alpha", "| mid"))]
    assert [r.split("|")[1].strip() for r in rows[:3]] == ["zeta", "alpha", "mid"]
    assert "0.1000" in rows[0] and "0.9000" in rows[1] and "0.5000" in rows[2]
