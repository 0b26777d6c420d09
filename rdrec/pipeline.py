"""rdrec-pipeline: run the quickstart's stages (conf/pipeline.yaml) in order, each cached by a fingerprint.

A stage is one run of an rdrec app (``python -m rdrec.cli.train …``) in its own process, in the directory
``<cache_dir>/<stage>/<fingerprint>``. The fingerprint hashes the app's fully composed and resolved config (the
run directory itself left out) and the fingerprints of the stages it ``needs``, so:

- a second run finds ``stage.json`` in that directory and skips the stage;
- a changed config gives a new fingerprint, so that stage and the stages that need it run again; unchanged
  siblings stay cached;
- a killed stage left its directory without ``stage.json``: it reruns there (training resumes from
  ``checkpoints/last.ckpt``, generation from its rationale store).

Code is not fingerprinted: after changing code, ``force=[stage]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from rdrec.utils.atomic import atomic_write_text
from rdrec.utils.resolvers import CONFIG_DIR

DONE = "stage.json"
_DIRS: dict[str, str] = {}  # stage name -> result directory, for ${stage_dir:NAME} (current seed)


def _stage_dir(name: str) -> str:
    if name not in _DIRS:
        raise KeyError(f"${{stage_dir:{name}}}: stage '{name}' has not run before this one (order, `needs` or enabled?)")
    return _DIRS[name]


OmegaConf.register_new_resolver("stage_dir", _stage_dir, replace=True)


@dataclass
class Stage:
    name: str
    app: str
    seed: int
    overrides: list[str]
    needs: list[str]
    fingerprint: str = ""
    dir: Path | None = None
    status: str = ""  # cached | ran | failed
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    record: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.dir is not None and (self.dir / DONE).exists()


def plan_stages(cfg: DictConfig) -> list[str]:
    """The enabled stage names to run, in config order: ``only`` (and what it needs) or every enabled one."""
    stages = cfg.stages
    enabled = [n for n, s in stages.items() if s is not None and s.get("enabled", True)]
    wanted = list(cfg.only) if cfg.get("only") else enabled
    for n in wanted:
        if n not in stages:
            raise SystemExit(f"rdrec-pipeline: error: no stage '{n}'; stages are: {', '.join(stages)}")
    chosen: set[str] = set()

    def add(n: str, by: str | None = None) -> None:
        if n not in stages:
            raise SystemExit(f"rdrec-pipeline: error: stage '{by}' needs '{n}', which is not a stage")
        if n not in enabled:
            raise SystemExit(f"rdrec-pipeline: error: stage '{by or n}' needs '{n}', which is disabled "
                             f"(stages.{n}.enabled=true)")
        if n not in chosen:
            chosen.add(n)
            for dep in stages[n].get("needs", []) or []:
                add(dep, n)

    for n in wanted:
        add(n)
    order = list(stages)
    for n in chosen:
        for dep in stages[n].get("needs", []) or []:
            if order.index(dep) > order.index(n):
                raise SystemExit(f"rdrec-pipeline: error: stage '{n}' needs '{dep}', which comes after it")
    return [n for n in order if n in chosen]


def fingerprint(app_config: str, overrides: list[str], needs: list[str]) -> str:
    """Hash of the app's composed, resolved config with the run directory left out, and of the needed stages."""
    cfg = compose(app_config, overrides=[*overrides, "paths.output_dir=RUN_DIR", "paths.log_dir=LOG_DIR"])
    config = _resolve_leniently(cfg)
    payload = json.dumps({"config": config, "needs": needs}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _set_overrides(node, prefix: str = "") -> list[str]:
    """``set: {trainer: {max_epochs: 5}}`` -> ``["trainer.max_epochs=5"]`` (easier to give on a command line
    than list overrides: ``+stages.sasrec.set.trainer.max_epochs=5``)."""
    if node is None:
        return []
    if OmegaConf.is_dict(node) or isinstance(node, dict):
        return [o for k, v in node.items() for o in _set_overrides(v, f"{prefix}{k}.")]
    value = OmegaConf.to_container(node) if OmegaConf.is_list(node) else node
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return [f"{prefix[:-1]}={text.replace(' ', '')}"]


def _resolve_leniently(cfg: DictConfig):
    """The config as plain data, interpolations resolved where they can be (generate's config has no `eval`, so
    its `data.candidate_lists: ${eval.candidate_lists}` stays as written: unused, and constant)."""
    def walk(node, path: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            try:
                value = OmegaConf.select(cfg, path, throw_on_resolution_failure=True)
                return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            except Exception:  # noqa: BLE001 - an unresolvable interpolation is fingerprinted as written
                return node
        return node

    return walk(OmegaConf.to_container(cfg, resolve=False), "")


def run_stage(stage: Stage, cfg: DictConfig) -> None:
    app = cfg.apps[stage.app]
    args = list(stage.overrides)
    if stage.app == "train" and (stage.dir / "checkpoints" / "last.ckpt").exists():
        args.append("ckpt_path=last")  # a killed run: continue from its last checkpoint
    cmd = [sys.executable, "-m", app.module, *args, f"hydra.run.dir={stage.dir}"]
    print(f"  $ {' '.join(cmd[1:])}", flush=True)
    start, cpu_start = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stage.seconds = time.perf_counter() - start
    stage.cpu_seconds = _children_cpu() - cpu_start  # on a shared machine the honest cost: wall time varies with load
    if proc.returncode != 0:
        stage.status = "failed"
        raise SystemExit(f"rdrec-pipeline: error: stage '{stage.name}' (seed {stage.seed}) failed with exit code "
                         f"{proc.returncode}; its run directory is {stage.dir} (rerun to retry: finished stages "
                         f"stay cached)")
    stage.status = "ran"
    stage.record = {"stage": stage.name, "app": stage.app, "seed": stage.seed, "fingerprint": stage.fingerprint,
                    "overrides": stage.overrides, "needs": stage.needs, "seconds": round(stage.seconds, 1),
                    "cpu_seconds": round(stage.cpu_seconds, 1),
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(stage.dir / DONE, json.dumps(stage.record, indent=2) + "\n")


def _resumable(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").exists()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pipeline(cfg: DictConfig) -> list[Stage]:
    names = plan_stages(cfg)
    done: list[Stage] = []
    total = len(names) * len(cfg.seeds)
    force = set(cfg.get("force") or [])
    for seed in cfg.seeds:
        _DIRS.clear()
        fps: dict[str, str] = {}
        for name in names:
            spec = cfg.stages[name]
            needs = list(spec.get("needs", []) or [])
            # resolves ${stage_dir:…} of earlier stages
            overrides = [*cfg.common, *spec.overrides, *_set_overrides(spec.get("set")), f"seed={seed}"]
            app_config = cfg.apps[spec.app].config
            stage = Stage(name, spec.app, seed, [str(o) for o in overrides], needs)
            stage.fingerprint = fingerprint(app_config, stage.overrides, [fps[d] for d in needs])
            fps[name] = stage.fingerprint
            stage.dir = Path(cfg.cache_dir) / name / stage.fingerprint
            _DIRS[name] = str(stage.dir)
            n = len(done) + 1
            head = f"[{n}/{total}] {name} (seed {seed}, {stage.fingerprint})"
            if stage.done and name not in force:
                stage.status, stage.record = "cached", json.loads((stage.dir / DONE).read_text())
                stage.seconds = stage.record.get("seconds", 0.0)
                stage.cpu_seconds = stage.record.get("cpu_seconds", 0.0)
                print(f"{head}: cached, {stage.dir} (took {stage.seconds:.0f} s on {stage.record.get('finished')})",
                      flush=True)
            elif cfg.dry_run:
                stage.status = "to run"
                print(f"{head}: would run in {stage.dir}", flush=True)
            else:
                print(f"{head}: running …", flush=True)
                if (stage.dir / DONE).exists():
                    (stage.dir / DONE).unlink()  # forced: the directory is reused, its record redone
                if stage.app == "train" and stage.dir.exists() and (name in force or not _resumable(stage.dir)):
                    shutil.rmtree(stage.dir)  # a finished, failed or forced training starts afresh (a run directory
                    # holds one run: rdrec.utils.rundir); a killed one is resumed (run_stage)
                stage.dir.mkdir(parents=True, exist_ok=True)
                run_stage(stage, cfg)
                print(f"{head}: done in {stage.seconds:.0f} s ({stage.cpu_seconds:.0f} s CPU)", flush=True)
            done.append(stage)
    return done


def report(stages: list[Stage], cfg: DictConfig) -> str:
    """The final table (train stages' metrics, mean ± std over seeds, p against the baseline) and the timings."""
    from rdrec.aggregate import load_runs, markdown, select_metrics, summarize
    from rdrec.utils.report import markdown_table

    parts = []
    trained = [s for s in stages if s.app == "train" and s.dir and (s.dir / "metrics.json").exists()]
    if trained:
        runs = load_runs([s.dir / "metrics.json" for s in trained])  # rows in path order: put them in stage order
        runs = runs.set_index("run_dir", drop=False).loc[[str(s.dir) for s in trained]].reset_index(drop=True)
        runs["settings"] = [{"stage": s.name} for s in trained]
        runs["setting"] = [s.name for s in trained]
        runs["seed"] = [s.seed for s in trained]
        metrics = select_metrics(runs, list(cfg.table.metrics))
        baseline = cfg.table.get("baseline")
        has_base = baseline in runs["setting"].values and len(cfg.seeds) > 1
        summary = summarize(runs, metrics, baseline=f"stage={baseline}" if has_base else None)
        summary["setting"] = summary["stage"]
        parts.append(markdown(summary, metrics).replace("| setting |", "| stage |", 1))
    for s in stages:
        if s.app == "generate" and s.dir and (s.dir / "metrics.json").exists():
            m = json.loads((s.dir / "metrics.json").read_text())
            keys = [k for k in ("generate/prompts", "generate/stored", "generate/failure_rate",
                                "generate/run/generated", "generate/run/tokens_per_s") if k in m]
            parts.append(f"{s.name} (seed {s.seed}): " + ", ".join(f"{k.split('/', 1)[1]} {m[k]:g}" for k in keys))
    rows = [[s.name, str(s.seed), s.status, f"{s.seconds:.0f}", f"{s.cpu_seconds:.0f}", str(s.dir)] for s in stages]
    parts.append(markdown_table(["stage", "seed", "status", "wall s", "CPU s", "directory"], rows))
    ran = sum(s.seconds for s in stages if s.status == "ran")
    parts.append(f"stages run now: {sum(s.status == 'ran' for s in stages)} ({ran:.0f} s); "
                 f"cached: {sum(s.status == 'cached' for s in stages)}")
    return "\n\n".join(parts)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    stages = run_pipeline(cfg)
    if not cfg.dry_run:
        print("\n" + report(stages, cfg), flush=True)
        print(f"pipeline: {time.perf_counter() - start:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
